"""The project's only caller of Stripe: a small wrapper around ``stripe.StripeClient``.

Configured per instance with the secret key and API base from settings (no module-global
``stripe.api_key``), it exposes only what billing needs and translates every
``stripe.StripeError`` into the tree of ``integrations.stripe.errors``. The secret key is
held as a ``SecretToken`` and revealed once, to ``StripeClient``; nothing here logs it.

localstripe (the tests' and ``make run``'s Stripe) cannot confirm a PaymentIntent with
a payment method passed at confirm time (``localstripe/resources.py``
``PaymentIntent._api_confirm``: 500 "Not implemented"), so ``payment_intent_create``
creates and confirms in one call with the saved payment method, which is also what
Stripe documents for off-session charges.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.conf import settings

from integrations.pymthouse.types import SecretToken
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

logger = logging.getLogger(__name__)


def _translate(exc: stripe.StripeError) -> StripeError:
    status = exc.http_status
    code = str(exc.code or "")
    message = str(exc.user_message or "Stripe refused the request.")
    if isinstance(exc, stripe.CardError):
        return StripeCardError(message, code=code or "card_declined", status=status)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        status is not None and status >= 500
    ):
        return StripeUnavailableError("Stripe is unavailable.", code=code, status=status)
    return StripeRequestError(message, code=code, status=status)


def _id(value: Any) -> str:
    """An expandable field: the id string, or the expanded object's id."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(value["id"])


def _payment_intent(obj: dict[str, Any]) -> PaymentIntentInfo:
    error = obj.get("last_payment_error") or {}
    return PaymentIntentInfo(
        id=str(obj["id"]),
        status=str(obj["status"]),
        amount_cents=int(obj["amount"]),
        currency=str(obj["currency"]),
        customer_id=_id(obj.get("customer")),
        charge_id=_id(obj.get("latest_charge")),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
        error_code=str(error.get("code") or ""),
        error_message=str(error.get("message") or ""),
        client_secret=str(obj.get("client_secret") or ""),
    )


class StripeGateway:
    def __init__(self, *, secret_key: SecretToken, api_base: str, timeout: float) -> None:
        self._client = stripe.StripeClient(
            secret_key.reveal(),
            base_addresses={"api": api_base},
            http_client=stripe.RequestsClient(timeout=timeout),
            max_network_retries=0,
        )

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call; the answer as plain dicts (``StripeObject`` is not a dict)."""
        try:
            answer = function(*args, **kwargs)
        except stripe.StripeError as exc:
            error = _translate(exc)
            logger.warning(
                "stripe: %s failed: %s (%s, HTTP %s)",
                what,
                type(error).__name__,
                error.code,
                error.status,
            )
            raise error from exc
        result: dict[str, Any] = answer.to_dict()
        return result

    def customer_create(self, *, email: str, user_ref: str, idempotency_key: str) -> str:
        customer = self._call(
            "customer create",
            self._client.v1.customers.create,
            params={"email": email, "metadata": {"pixelhouse_user": user_ref}},
            options={"idempotency_key": idempotency_key},
        )
        return str(customer["id"])

    def setup_intent_create(self, *, customer_id: str) -> SetupIntentInfo:
        intent = self._call(
            "setup intent create",
            self._client.v1.setup_intents.create,
            params={"customer": customer_id, "usage": "off_session"},
        )
        return self._setup_intent(intent)

    def setup_intent_retrieve(self, setup_intent_id: str) -> SetupIntentInfo:
        intent = self._call(
            "setup intent retrieve", self._client.v1.setup_intents.retrieve, setup_intent_id
        )
        return self._setup_intent(intent)

    @staticmethod
    def _setup_intent(intent: dict[str, Any]) -> SetupIntentInfo:
        return SetupIntentInfo(
            id=str(intent["id"]),
            status=str(intent["status"]),
            customer_id=_id(intent.get("customer")),
            payment_method_id=_id(intent.get("payment_method")),
            client_secret=str(intent.get("client_secret") or ""),
        )

    def card_attach(self, *, payment_method_id: str, customer_id: str) -> CardInfo:
        """The card of ``payment_method_id``, attached to the customer if it is not yet
        (Stripe attaches a SetupIntent's card itself; localstripe does not)."""
        method = self._call(
            "payment method retrieve", self._client.v1.payment_methods.retrieve, payment_method_id
        )
        owner = _id(method.get("customer"))
        if owner and owner != customer_id:
            raise StripeRequestError("That card belongs to another customer.")
        if not owner:
            method = self._call(
                "payment method attach",
                self._client.v1.payment_methods.attach,
                payment_method_id,
                params={"customer": customer_id},
            )
        card = method["card"]
        return CardInfo(
            payment_method_id=str(method["id"]),
            brand=str(card.get("brand") or "card"),
            last4=str(card.get("last4") or ""),
            exp_month=int(card.get("exp_month") or 0),
            exp_year=int(card.get("exp_year") or 0),
        )

    def payment_intent_create(
        self,
        *,
        amount_cents: int,
        customer_id: str,
        payment_method_id: str,
        off_session: bool,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> PaymentIntentInfo:
        """Create and confirm a USD PaymentIntent with a saved card, in one call.

        Returns its state (``succeeded``, ``requires_action`` for 3-D Secure,
        ``processing``); a refusal raises ``StripeCardError``."""
        params: dict[str, Any] = {
            "amount": amount_cents,
            "currency": "usd",
            "customer": customer_id,
            "payment_method": payment_method_id,
            "confirm": True,
            "metadata": metadata,
            "expand": ["latest_charge"],
        }
        if off_session:
            params["off_session"] = True
        intent = self._call(
            "payment intent create",
            self._client.v1.payment_intents.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )
        return _payment_intent(intent)

    def payment_intent_retrieve(self, payment_intent_id: str) -> PaymentIntentInfo:
        intent = self._call(
            "payment intent retrieve",
            self._client.v1.payment_intents.retrieve,
            payment_intent_id,
            params={"expand": ["latest_charge"]},
        )
        return _payment_intent(intent)

    def charge_retrieve(self, charge_id: str) -> ChargeInfo:
        charge = self._call("charge retrieve", self._client.v1.charges.retrieve, charge_id)
        return ChargeInfo(
            id=str(charge["id"]),
            payment_intent_id=_id(charge.get("payment_intent")),
            amount_cents=int(charge["amount"]),
            currency=str(charge["currency"]),
        )

    def refunds_list(self, *, charge_id: str) -> list[RefundInfo]:
        page = self._call(
            "refunds list", self._client.v1.refunds.list, params={"charge": charge_id, "limit": 100}
        )
        return [
            RefundInfo(id=str(r["id"]), amount_cents=int(r["amount"]), status=str(r["status"]))
            for r in page["data"]
        ]


def webhook_event_construct(*, payload: bytes, signature: str, secret: str) -> WebhookEvent:
    """Verify ``Stripe-Signature`` over the raw body (``stripe.Webhook.construct_event``,
    5 minutes' tolerance) and return the event; ``StripeSignatureError`` otherwise."""
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as exc:
        raise StripeSignatureError("bad signature") from exc
    except ValueError as exc:  # not JSON
        raise StripeSignatureError("unreadable body") from exc
    data = event["data"]["object"].to_dict()
    return WebhookEvent(
        id=str(event["id"]), type=str(event["type"]), object_id=str(data.get("id", "")), data=data
    )


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def get_gateway() -> StripeGateway:
    """The client for the configured account; ``StripeRequestError`` when payments are off."""
    if not settings.STRIPE_SECRET_KEY:
        raise StripeRequestError("Card payments are not configured.", code="payments_off")
    return StripeGateway(
        secret_key=SecretToken(settings.STRIPE_SECRET_KEY),
        api_base=settings.STRIPE_API_BASE,
        timeout=settings.STRIPE_TIMEOUT_SECONDS,
    )
