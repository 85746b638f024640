"""Helpers for the card-payment tests: the browser's side of Stripe.js (against
localstripe, with the publishable key only) and webhook events in Stripe's wire format,
signed with the endpoint's secret exactly as Stripe signs them
(``t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<body>")``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.test import Client

from accounts.models import User
from billing.models import StripeCustomer
from billing.services import card_setup_finish, card_setup_start

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
VISA = "4242424242424242"
VISA_3DS = "4000002500003155"
DECLINED_AT_CHARGE = "4000000000000341"


def _stripe(method: str, path: str, body: dict[str, Any] | None = None, *, key: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{settings.STRIPE_API_BASE}{path}", data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def stripe_get(path: str) -> Any:
    """An object as Stripe's API returns it (server-side key)."""
    return _stripe("GET", path, key=settings.STRIPE_SECRET_KEY)


def stripe_post(path: str, body: dict[str, Any]) -> Any:
    return _stripe("POST", path, body, key=settings.STRIPE_SECRET_KEY)


def browser_post(path: str, body: dict[str, Any]) -> Any:
    """A call Stripe.js makes from the page: no secret key, the publishable one in the body."""
    return _stripe("POST", path, body)


def card_save(user: User, number: str = VISA) -> StripeCustomer:
    """What the page does: a SetupIntent from our service, confirmed the way
    ``confirmCardSetup`` in localstripe's Stripe.js confirms it, then recorded."""
    intent = card_setup_start(user=user)
    _stripe(
        "POST",
        f"/v1/setup_intents/{intent.id}/confirm",
        {
            "key": settings.STRIPE_PUBLISHABLE_KEY,
            "use_stripe_sdk": True,
            "client_secret": intent.client_secret,
            "payment_method_data": {
                "type": "card",
                "card": {"number": number, "exp_month": "12", "exp_year": "2030", "cvc": "123"},
            },
        },
    )
    return card_setup_finish(user=user, setup_intent_id=intent.id)


def event_body(event_type: str, obj: dict[str, Any], *, event_id: str = "") -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def signed(
    event: dict[str, Any], *, secret: str = "", timestamp: int | None = None
) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    key = (secret or settings.STRIPE_WEBHOOK_SECRET).encode()
    signature = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={ts},v1={signature}"


def webhook_post(client: Client, event: dict[str, Any], **signing: Any) -> Any:
    body, header = signed(event, **signing)
    return client.post(
        "/billing/stripe/webhook/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )
