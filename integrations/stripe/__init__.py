"""The Stripe client (owner_rollup card payments): the project's only caller of Stripe.

Use ``get_gateway()`` and catch the narrowest ``StripeError`` subclass.
"""

from __future__ import annotations

from integrations.stripe.client import (
    StripeGateway,
    get_gateway,
    stripe_enabled,
    webhook_event_construct,
)
from integrations.stripe.errors import (
    StripeCardError,
    StripeError,
    StripeRequestError,
    StripeSignatureError,
    StripeUnavailableError,
)
from integrations.stripe.types import (
    CardInfo,
    ChargeInfo,
    PaymentIntentInfo,
    RefundInfo,
    SetupIntentInfo,
    WebhookEvent,
)

__all__ = [
    "CardInfo",
    "ChargeInfo",
    "PaymentIntentInfo",
    "RefundInfo",
    "SetupIntentInfo",
    "StripeCardError",
    "StripeError",
    "StripeGateway",
    "StripeRequestError",
    "StripeSignatureError",
    "StripeUnavailableError",
    "WebhookEvent",
    "get_gateway",
    "stripe_enabled",
    "webhook_event_construct",
]
