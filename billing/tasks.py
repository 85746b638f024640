"""Celery tasks of the billing app: thin wrappers over billing.services (ids only)."""

from __future__ import annotations

import logging

from celery import shared_task

from billing.services import payments

logger = logging.getLogger("tasks." + __name__)


@shared_task(soft_time_limit=60, time_limit=90)
def auto_topup_task(account_id: int) -> None:
    """Top the account up if it is below its threshold (at most one payment in flight).

    Never retried: when Stripe could not be reached the attempt stays in flight (its
    outcome is unknown until the webhook says), and the next usage charge checks again.
    """
    try:
        payments.auto_topup_run(account_id=account_id)
    except payments.PaymentsUnavailableError:
        logger.warning("auto top-up of account %s: Stripe unavailable", account_id)
