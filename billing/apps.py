from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_save

        from billing import checks  # noqa: F401  (registers the system checks)
        from billing.db import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="billing-wei-sum")
        post_migrate.connect(_seed_plans, sender=self, dispatch_uid="billing-seed-plans")
        post_migrate.connect(
            _seed_usage_schedule, sender=self, dispatch_uid="billing-seed-usage-schedule"
        )
        post_migrate.connect(
            _fill_usage_search, sender=self, dispatch_uid="billing-fill-usage-search"
        )
        from billing import signals

        post_save.connect(
            signals.aggregate_email_follow_user,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="billing-aggregate-email",
        )


def _seed_plans(sender: AppConfig, **kwargs: Any) -> None:
    """Seed the standard plans after migrate (and after test flushes); idempotent."""
    from billing.services import plans_seed

    using = kwargs.get("using", "default")
    if using == "default":
        plans_seed()


def _seed_usage_schedule(sender: AppConfig, **kwargs: Any) -> None:
    """Seed the usage sync's django-celery-beat entry (never overwrites admin edits)."""
    from billing.services.usage_schedule import usage_sync_schedule_seed

    if kwargs.get("using", "default") == "default":
        usage_sync_schedule_seed()


def _fill_usage_search(sender: AppConfig, **kwargs: Any) -> None:
    """Backfill the staff table's denormalised email/search columns (idempotent, cheap)."""
    from billing.signals import usage_aggregates_fill_search

    if kwargs.get("using", "default") == "default":
        usage_aggregates_fill_search()
