"""Seed the usage sync's beat schedule in django-celery-beat (editable in the admin)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

USAGE_SYNC_SCHEDULE_NAME = "billing-usage-sync"


@transaction.atomic
def usage_sync_schedule_seed() -> None:
    """Create the periodic task once; later edits in the admin are never overwritten."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from billing.tasks import USAGE_SYNC_TASK

    if PeriodicTask.objects.filter(name=USAGE_SYNC_SCHEDULE_NAME).exists():
        return
    every = settings.BILLING_USAGE_SYNC_INTERVAL_SECONDS
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=every, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.create(
        name=USAGE_SYNC_SCHEDULE_NAME,
        task=USAGE_SYNC_TASK,
        interval=interval,
        description=(
            "Mirror pymthouse usage (groupBy=user, then groupBy=manifest per changed user)."
        ),
        expires=None,
        expire_seconds=max(every - 5, 5),
    )
