"""Create the demo logins and (re)schedule their provisioning at pymthouse.

Idempotent: existing users are kept and only re-provisioned (the sandbox keeps
its state in memory, so a restarted sandbox forgets them). Refuses to run with
DEBUG off: the demo logins have a published password, superuser included.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
from accounts.services import user_create, user_provision_schedule
from billing.services import demo_billing_seed

DEMO_PASSWORD = "pixelhouse-demo"  # noqa: S105  (a published demo login)
DEMO_USERS = (
    # email, external user id (the tutorial's two end users), staff
    ("admin@example.com", None, True),
    ("alice@example.com", "py-user-001", False),
    ("bob@example.com", "py-user-002", False),
    ("carol@example.com", "py-user-003", False),
)


class Command(BaseCommand):
    help = (
        "Create the demo staff user and three end users (alice on a usage-based plan with "
        "credit, bob on the free plan, carol on a subscription) and provision them."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates logins with a published password (a superuser among "
                "them); it only runs with DJANGO_DEBUG on."
            )
        with transaction.atomic():
            for email, external_user_id, is_staff in DEMO_USERS:
                user = User.objects.filter(email=email).first()
                if user is None:
                    user_create(
                        email=email,
                        password=DEMO_PASSWORD,
                        external_user_id=external_user_id,
                        is_staff=is_staff,
                        is_superuser=is_staff,
                        email_verified=True,
                    )
                    self.stdout.write(f"created {email}")
                else:
                    user_provision_schedule(user=user)
                    self.stdout.write(f"kept {email}; provisioning rescheduled")
            demo_billing_seed(
                usage_user=User.objects.get(email="alice@example.com"),
                free_user=User.objects.get(email="bob@example.com"),
                subscription_user=User.objects.get(email="carol@example.com"),
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo logins (password {DEMO_PASSWORD!r}): "
                + ", ".join(email for email, _, _ in DEMO_USERS)
            )
        )
