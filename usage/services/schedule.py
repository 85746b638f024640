"""Seed every periodic job (``settings.PERIODIC_JOBS``) into django-celery-beat.

``PERIODIC_JOBS`` is the one place periodic jobs are declared; beat runs with the
database scheduler, so the rows seeded here are the schedule (editable in the admin).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask


@transaction.atomic
def periodic_jobs_seed() -> list[str]:
    """Create each job's periodic task once; returns the names created.

    A job already present (by name) is left as it is: later edits in the admin are never
    overwritten.
    """
    created: list[str] = []
    existing = set(
        PeriodicTask.objects.filter(name__in=list(settings.PERIODIC_JOBS)).values_list(
            "name", flat=True
        )
    )
    for name, job in settings.PERIODIC_JOBS.items():
        if name in existing:
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=job["every"], period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=name,
            task=job["task"],
            interval=interval,
            description=job["description"],
            expires=None,
            expire_seconds=job["expire_seconds"],
        )
        created.append(name)
    return created
