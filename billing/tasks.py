"""Celery tasks of the billing app: thin, bounded, idempotent."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger("tasks." + __name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def holds_resolve_stale_task() -> int:
    """Periodic: settle or release holds left open; each one is reported in the log."""
    from billing.services import holds_resolve_stale

    report = holds_resolve_stale()
    if report:
        logger.warning("billing: resolved %d stale holds", len(report))
    return len(report)


#: The django-celery-beat entry seeded by ``usage_sync_schedule_seed``.
USAGE_SYNC_TASK = "billing.tasks.usage_sync_task"


@shared_task(soft_time_limit=600, time_limit=660)
def usage_sync_task() -> str:
    """Mirror pymthouse usage once. Upstream faults are recorded, not retried here: the
    next scheduled run is the retry, and the lease keeps two runs from overlapping."""
    from billing.services.usage_sync import usage_sync_run

    return str(usage_sync_run().status)
