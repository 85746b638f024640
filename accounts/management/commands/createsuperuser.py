"""Django's createsuperuser, with the new user's pymthouse provisioning scheduled.

Django's command builds the user through ``UserManager.create_superuser`` (model level,
no service import); this wrapper hands every user it created to the service layer.
"""

from __future__ import annotations

from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth.management.commands import createsuperuser

from accounts.models import User
from accounts.services import user_provision_schedule


class Command(createsuperuser.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        last_pk = User.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        super().handle(*args, **options)
        for user in User.objects.filter(pk__gt=last_pk):
            EmailAddress.objects.get_or_create(
                user=user, email=user.email, defaults={"primary": True, "verified": True}
            )
            user_provision_schedule(user=user)
