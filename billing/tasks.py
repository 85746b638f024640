"""Celery tasks of the billing app: thin wrappers over billing.services (ids only)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from billing import services

logger = logging.getLogger("tasks." + __name__)


@shared_task(
    autoretry_for=(OSError,),  # the mail server is down or refused: try again later
    retry_backoff=30,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=30,
    time_limit=60,
)
def low_balance_mail_task(entry_id: int) -> bool:
    """Send the low-balance mail of the entry that crossed a threshold. Not acks_late: a
    mail is not idempotent, and one lost to a worker crash beats one sent twice."""
    return services.low_balance_mail_send(entry_id=entry_id)


@shared_task(expires=240, soft_time_limit=120, time_limit=180)
def promotions_expire_task() -> int:
    """Take back what expired promotional lots have left (each lot once)."""
    return services.promotions_expire_due(now=timezone.now())
