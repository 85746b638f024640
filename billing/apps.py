from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from accounts.hooks import user_registered_hook_register
        from billing import checks  # noqa: F401  (registers the system checks)
        from billing.db import register_sqlite_functions
        from billing.services import account_open

        user_registered_hook_register(account_open)

        connection_created.connect(register_sqlite_functions, dispatch_uid="billing-wei-sum")
        post_migrate.connect(_seed_plans, sender=self, dispatch_uid="billing-seed-plans")


def _seed_plans(sender: AppConfig, **kwargs: Any) -> None:
    """Seed the standard plans after migrate (and after test flushes); idempotent."""
    from billing.services import plans_seed

    using = kwargs.get("using", "default")
    if using == "default":
        plans_seed()
