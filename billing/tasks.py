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


@shared_task(acks_late=True, soft_time_limit=240, time_limit=270)
def subscription_renewals_task() -> int:
    """Charge the renewals due (docs/billing.md "Paying for a plan"); once per period."""
    now = timezone.now()
    renewed = 0
    for account_id in services.renewals_due(now=now):
        try:
            payment = services.subscription_renewal_run(account_id=account_id, now=now)
        except services.PaymentsUnavailableError:
            logger.warning("billing: renewals stopped: the payment service is unavailable")
            break
        if payment is not None and payment.status == "succeeded":
            renewed += 1
    if renewed:
        logger.info("billing: renewed %s subscription(s)", renewed)
    return renewed


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


@shared_task(soft_time_limit=60, time_limit=90)
def auto_topup_task(account_id: int) -> None:
    """Top the account up if it is below its threshold (at most one payment in flight).

    Never retried: when Stripe could not be reached the attempt stays in flight (its
    outcome is unknown until the webhook says), and the next usage charge checks again.
    """
    try:
        services.auto_topup_run(account_id=account_id)
    except services.PaymentsUnavailableError:
        logger.warning("auto top-up of account %s: Stripe unavailable", account_id)
