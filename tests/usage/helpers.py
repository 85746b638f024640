"""Helpers for the usage-mirror tests."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission

from accounts.models import User
from tests.factories import UserFactory


def billing_staff(**kwargs: Any) -> User:
    """A staff account allowed on /staff/billing/ (``usage.view_staff_billing``)."""
    user: User = UserFactory(is_staff=True, **kwargs)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="usage", codename="view_staff_billing")
    )
    return user
