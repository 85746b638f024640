"""Celery tasks of the billing app: thin wrappers over billing.services."""

from __future__ import annotations

import logging

from celery import shared_task

from billing.services.usage_sync import usage_sync_run

logger = logging.getLogger("tasks." + __name__)

#: The django-celery-beat entry seeded by ``usage_sync_schedule_seed``.
USAGE_SYNC_TASK = "billing.tasks.usage_sync_task"


@shared_task(soft_time_limit=600, time_limit=660)
def usage_sync_task() -> str:
    """Mirror pymthouse usage once. Upstream faults are recorded, not retried here: the
    next scheduled run is the retry, and the lease keeps two runs from overlapping."""
    run = usage_sync_run()
    return str(run.status)
