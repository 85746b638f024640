"""Which way users pay, from settings (``BILLING_MODE``, ``STRIPE_SECRET_KEY``)."""

from __future__ import annotations

from django.conf import settings


def payments_enabled() -> bool:
    """Users can buy credit by card: owner_rollup with the operator's Stripe configured."""
    return settings.BILLING_MODE == "owner_rollup" and bool(settings.STRIPE_SECRET_KEY)
