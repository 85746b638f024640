"""Celery tasks of the usage app: thin, bounded, idempotent."""

from __future__ import annotations

from celery import shared_task

from usage.services.sync import usage_sync_run


@shared_task(soft_time_limit=600, time_limit=660)
def usage_sync_task() -> str:
    """Mirror pymthouse usage once. Upstream faults are recorded, not retried here: the
    next scheduled run is the retry, and the lease keeps two runs from overlapping."""
    return str(usage_sync_run().status)
