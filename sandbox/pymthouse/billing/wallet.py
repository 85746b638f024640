"""M2M-strict routes: ``billing/state``, ``billing/wallet`` (GET, PATCH auto top-up),
``billing/wallet/top-up`` and ``billing/wallet/payment-methods``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.billing import (
    DEFAULT_AUTO_TOP_UP_USD_MICROS,
    Customer,
    usd_text,
)
from sandbox.pymthouse.billing.common import (
    BILLING_UNAVAILABLE,
    EXT_REQUIRED_MERCHANT,
    checkout_url,
    clean_ext,
    dashboard_url,
    error_response,
    m2m_strict,
    not_found,
    parse_amount_usd,
    return_url,
    subject_ext,
    tolerant_json,
)
from sandbox.pymthouse.billing.posture import billing_state_json
from sandbox.state import SandboxState
from sandbox.web import get_state, json_response

logger = logging.getLogger(__name__)


# --- wallet, state, top-up (M2M-strict) --------------------------------------------------


async def billing_state(request: Request) -> Response:
    state = get_state(request)
    if not m2m_strict(state, request):
        return not_found()
    ext, problem = subject_ext(state, request)
    if problem is not None:
        return problem
    return json_response(billing_state_json(state, ext), headers={"Cache-Control": "no-store"})


def _auto_top_up(customer: Customer) -> dict[str, Any]:
    amount = customer.auto_top_up_usd_micros
    return {"enabled": customer.auto_top_up_enabled, "amountUsd": _amount_text(amount)}


def _amount_text(amount: int | None) -> str | None:
    return None if amount is None else usd_text(amount)


async def wallet(request: Request) -> Response:
    state = get_state(request)
    if not m2m_strict(state, request):
        return not_found()
    if request.method == "PATCH":
        return await _wallet_patch(state, request)
    ext, problem = subject_ext(state, request)
    if problem is not None:
        return problem
    book = state.billing
    customer = book.customer(book.customer_key(ext))
    balance = None
    if state.billing_on:
        consumed = customer.lifetime_granted_usd_micros - customer.prepaid_usd_micros
        balance = {
            "usdMicros": str(customer.prepaid_usd_micros),
            "usd": usd_text(max(0, customer.prepaid_usd_micros)),
            "lifetimeGrantedUsdMicros": str(customer.lifetime_granted_usd_micros),
            "consumedUsdMicros": str(max(0, consumed)),
        }
    if book.is_merchant:
        has_default: bool | None = customer.has_default_card if state.billing_on else False
    else:
        has_default = customer.has_default_card if state.billing_on else None
    return json_response(
        {
            "clientId": state.settings.app_id,
            "balance": balance,
            "paymentMethod": {"hasDefault": has_default},
            "autoTopUp": _auto_top_up(customer) if book.is_merchant else None,
            "billingState": billing_state_json(state, ext),
            "payPerUsePlans": [
                {
                    "planId": plan.id,
                    "planName": plan.name,
                    "chargeThresholdUsdMicros": None,
                    "resolvedBehavior": plan.as_v1(state.settings.app_id, False)[
                        "resolvedBehavior"
                    ],
                }
                for plan in book.plans.values()
                if plan.type == "usage"
            ],
        }
    )


async def _wallet_patch(state: SandboxState, request: Request) -> Response:
    """Auto top-up (T#15, T#99–T#101)."""
    body = await tolerant_json(request)
    book = state.billing
    ext = clean_ext(body.get("externalUserId"))
    if not book.is_merchant:
        return error_response(
            409, "Auto top-up is available for merchant end-users only",
            code="auto_topup_merchant_only",
        )  # fmt: skip
    if ext is None:
        return error_response(400, EXT_REQUIRED_MERCHANT)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        return error_response(400, "enabled must be a boolean")
    customer = book.customer(book.customer_key(ext))
    amount = customer.auto_top_up_usd_micros or DEFAULT_AUTO_TOP_UP_USD_MICROS
    if "amountUsd" in body:
        parsed, message = parse_amount_usd(body["amountUsd"])
        if message is not None:
            return error_response(400, message)
        amount = parsed or amount
    if enabled and not (state.billing_on and customer.has_default_card):
        return error_response(
            409, "Add a payment method before enabling auto top-up",
            code="payment_method_required",
        )  # fmt: skip
    customer.auto_top_up_enabled = enabled
    customer.auto_top_up_usd_micros = amount
    return json_response(
        {"externalUserId": ext, "autoTopUp": {"enabled": enabled, "amountUsd": usd_text(amount)}}
    )


async def top_up(request: Request) -> Response:
    """``POST …/billing/wallet/top-up`` (T#16–T#22, T#97, T#98)."""
    state = get_state(request)
    if not m2m_strict(state, request):
        return not_found()
    body = await tolerant_json(request)
    micros, message = parse_amount_usd(body.get("amountUsd"))
    if message is not None or micros is None:
        return error_response(400, message or "amountUsd is required")
    book = state.billing
    ext = clean_ext(body.get("externalUserId"))
    if book.is_merchant:
        if ext is None:
            return error_response(400, EXT_REQUIRED_MERCHANT)
        if not book.connect_ready:
            return error_response(409, "Merchant Stripe Connect is not ready to accept payments")
    if not state.billing_on:
        return error_response(503, BILLING_UNAVAILABLE)
    fallback = dashboard_url(state, "/billing?topup=succeeded")
    # Only the owner_rollup branch forwards Idempotency-Key to Stripe (§6.4).
    key = None if book.is_merchant else request.headers.get("idempotency-key")
    known = book.sessions.get(book.idempotent_sessions.get(key or "", ""))
    session = known or book.new_session(
        mode="payment",
        customer_key=book.customer_key(ext),
        success_url=return_url(body.get("successUrl"), fallback),
        cancel_url=return_url(body.get("cancelUrl"), dashboard_url(state, "/billing")),
        amount_usd_micros=micros,
    )
    if key:
        book.idempotent_sessions[key] = session.id
    logger.info("top-up checkout %s for %s micros", session.id, micros)
    return json_response(
        {
            "checkoutUrl": checkout_url(state, session.id),
            "sessionId": session.id,
            "amountUsdMicros": str(micros),
        }
    )


def cards_json(customer: Customer) -> list[dict[str, Any]]:
    return [card.as_json(is_default=card.id == customer.default_card_id) for card in customer.cards]


async def wallet_payment_methods(request: Request) -> Response:
    """``GET``/``POST …/billing/wallet/payment-methods`` (T#24, T#25, T#103, T#104)."""
    state = get_state(request)
    if not m2m_strict(state, request):
        return not_found()
    book = state.billing
    if request.method == "GET":
        ext, problem = subject_ext(state, request)
        if problem is not None:
            return problem
        customer = book.customer(book.customer_key(ext))
        visible = state.billing_on and (book.connect_ready or not book.is_merchant)
        return json_response({"paymentMethods": cards_json(customer) if visible else []})
    body = await tolerant_json(request)
    ext, problem = subject_ext(state, request, clean_ext(body.get("externalUserId")))
    if problem is not None:
        return problem
    if not state.billing_on:
        return error_response(503, BILLING_UNAVAILABLE)
    if book.is_merchant and not book.connect_ready:
        return error_response(409, "Merchant Stripe Connect is not ready to accept payments")
    return setup_session(state, ext, body)


def setup_session(state: SandboxState, ext: str | None, body: dict[str, Any]) -> Response:
    book = state.billing
    customer = book.customer(book.customer_key(ext))
    fallback = dashboard_url(state, "/billing?setup=succeeded")
    session = book.new_session(
        mode="setup",
        customer_key=customer.key,
        success_url=return_url(body.get("successUrl"), fallback),
        cancel_url=return_url(body.get("cancelUrl"), dashboard_url(state, "/billing")),
    )
    return json_response(
        {
            "checkoutUrl": checkout_url(state, session.id),
            "sessionId": session.id,
            "customerId": customer.key,
            "hasDefaultPaymentMethod": customer.has_default_card,
        }
    )
