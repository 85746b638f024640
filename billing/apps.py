from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from billing.db import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="billing-wei-sum")

        from billing.services.usage_schedule import usage_sync_schedule_seed

        post_migrate.connect(usage_sync_schedule_seed, sender=self)
