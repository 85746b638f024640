"""Typed answers of the Stripe client (parsed at the boundary, house style R10).

Amounts are Stripe's integer minor units (cents for USD) exactly as sent; billing turns
them into USD micros (× 10,000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SetupIntentInfo:
    id: str
    status: str
    customer_id: str
    payment_method_id: str
    #: For Stripe.js in the customer's browser only (``confirmCardSetup``); never stored.
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class CardInfo:
    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class PaymentIntentInfo:
    id: str
    status: str
    amount_cents: int
    currency: str
    customer_id: str
    charge_id: str
    metadata: dict[str, str]
    error_code: str = ""
    error_message: str = ""
    #: For ``confirmCardPayment`` in the browser when ``status == "requires_action"``.
    client_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class RefundInfo:
    id: str
    amount_cents: int
    status: str


@dataclass(frozen=True)
class ChargeInfo:
    id: str
    payment_intent_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True)
class WebhookEvent:
    """A verified event: its id, type and the object it carries (as Stripe sent it)."""

    id: str
    type: str
    object_id: str
    data: dict[str, Any]
