"""Celery tasks of the billing app: thin, bounded, idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

logger = logging.getLogger("tasks." + __name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def merchant_wallets_refresh_task() -> int:
    """Periodic (merchant mode): mirror users' pymthouse wallets into the ledger.
    Idempotent (each change is keyed on pymthouse's counters), so redelivery is safe."""
    from billing.services.wallet import merchant_wallets_refresh

    return merchant_wallets_refresh(limit=settings.BILLING_WALLET_SYNC_LIMIT)
