from __future__ import annotations

from typing import Any

import factory

from accounts.models import User
from accounts.services import user_create


class UserFactory(factory.django.DjangoModelFactory[User]):
    """Users made through the service, so provisioning is scheduled as in production."""

    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = "pw-test-12345"

    @classmethod
    def _create(cls, model_class: type[User], *args: Any, **kwargs: Any) -> User:
        return user_create(**kwargs)
