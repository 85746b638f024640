"""Celery tasks of the billing app: thin wrappers over billing.services (arguments are
ids only). ``billing.services`` schedules some of them, so this module imports the
package, not its modules, and reads the functions when a task runs."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing import services

logger = logging.getLogger("tasks." + __name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def plan_changes_apply_due_task() -> int:
    """Apply the scheduled plan changes (downgrades, cancellations) whose period ended."""
    now = timezone.now()
    applied = 0
    for user_id in services.pending_changes_due(now=now):
        if services.pending_change_apply(user_id=user_id, now=now) is not None:
            applied += 1
    if applied:
        logger.info("billing: applied %s scheduled plan change(s)", applied)
    return applied


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


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def merchant_wallets_refresh_task() -> int:
    """Periodic (merchant mode; nothing in owner_rollup): mirror users' pymthouse wallets
    into the ledger. Idempotent (each change is keyed on pymthouse's counters)."""
    return services.merchant_wallets_refresh(limit=settings.BILLING_WALLET_SYNC_LIMIT)
