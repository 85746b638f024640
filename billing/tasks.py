"""Periodic billing jobs (enqueued by beat; arguments are ids only)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing.services import subscriptions, wallet

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def plan_changes_apply_due_task() -> int:
    """Apply the scheduled plan changes (downgrades, cancellations) whose period ended."""
    now = timezone.now()
    applied = 0
    for user_id in subscriptions.pending_changes_due(now=now):
        if subscriptions.pending_change_apply(user_id=user_id, now=now) is not None:
            applied += 1
    if applied:
        logger.info("billing: applied %s scheduled plan change(s)", applied)
    return applied


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def merchant_wallets_refresh_task() -> int:
    """Periodic (merchant mode; nothing in owner_rollup): mirror users' pymthouse wallets
    into the ledger. Idempotent (each change is keyed on pymthouse's counters)."""
    return wallet.merchant_wallets_refresh(limit=settings.BILLING_WALLET_SYNC_LIMIT)
