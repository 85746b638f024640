from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from billing.db import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="billing-wei-sum")
