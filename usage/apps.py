from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class UsageConfig(AppConfig):
    """The usage mirror of pymthouse: the top app (it may import every app below it)."""

    name = "usage"
    verbose_name = "Usage mirror"

    def ready(self) -> None:
        from accounts.hooks import email_changed_hook_register
        from usage.services.search import aggregate_email_follow

        email_changed_hook_register(aggregate_email_follow)
        post_migrate.connect(_seed_periodic_jobs, sender=self, dispatch_uid="usage-seed-jobs")
        post_migrate.connect(_fill_usage_search, sender=self, dispatch_uid="usage-fill-search")


def _seed_periodic_jobs(sender: AppConfig, **kwargs: Any) -> None:
    """Seed every periodic job of ``settings.PERIODIC_JOBS`` (never overwrites admin edits).

    Seeded here because this app is migrated last: every task it names is importable.
    """
    from usage.services.schedule import periodic_jobs_seed

    if kwargs.get("using", "default") == "default":
        periodic_jobs_seed()


def _fill_usage_search(sender: AppConfig, **kwargs: Any) -> None:
    """Backfill the staff table's denormalised email/search columns (idempotent, cheap)."""
    from usage.services.search import usage_aggregates_fill_search

    if kwargs.get("using", "default") == "default":
        usage_aggregates_fill_search()
