"""End-user billing routes: wallet, state, top-up, plans, checkout, subscription, invoices.

Built to pymthouse/pymthouse@5ee7cfc7 (docs/upstream.md §P9) and its live
transcript against the real local server (T#n below):

* auth (§3): **M2M-strict** (``authorizeOwnerWalletM2m``,
  ``src/lib/billing/owner-wallet-m2m-auth.ts``) on ``billing/wallet*`` and
  ``billing/state``: Basic ``m2m_…`` only. **App-client-or-session**
  (``authorizeAppForBilling``, ``src/lib/billing/app-auth.ts``) on ``plans``,
  ``billing/checkout`` and ``users/{ext}/…``: Basic of ``m2m_…`` *or* ``web_…``. Every
  auth failure is ``404 {"error":"Not found"}`` (T#3–T#9, T#89, T#90);
* "billing off" (no OpenMeter/Stripe: the default, like the local server) answers what
  T#10–T#127 show; "billing on" is the sandbox's ``BillingBook.enabled`` plus the runtime
  ``openMeterEnabled``;
* amounts: ``parseTopUpAmountUsd`` (``src/lib/stripe/topup-checkout.ts``), exact micros.

Checkout pages and the delayed credit are in ``checkout.py``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.billing import (
    DEFAULT_AUTO_TOP_UP_USD_MICROS,
    LEAD_CAP_USD_MICROS,
    MINIMUM_CHARGE_USD_MICROS,
    BillingBook,
    Customer,
    Plan,
    Subscription,
    money,
    month_end,
    usd_text,
)
from sandbox.state import SandboxState, iso_millis
from sandbox.web import get_state, json_response, parse_authorization, secret_matches

logger = logging.getLogger(__name__)

DOCS_URL = "https://docs.pymthouse.com/billing/pay-as-you-go"
BILLING_UNAVAILABLE = "Billing is not available right now"
EXT_REQUIRED_MERCHANT = "externalUserId is required when billingMode is merchant"
OWNER_WALLET = (
    "App retail subscription mutations cannot target the owner wallet; use Owner Paid billing APIs"
)
OPENMETER_NOT_CONFIGURED = (
    "OpenMeter is not configured (set OPENMETER_URL; OPENMETER_API_KEY only for secured "
    "deployments)"
)
TIMING_ERROR = 'timing must be "immediate" or "next_billing_cycle"'
TIMINGS = ("immediate", "next_billing_cycle")
_AMOUNT = re.compile(r"\d{1,5}(\.\d{1,2})?", re.ASCII)
TOP_UP_MIN_USD_MICROS = 1_000_000
TOP_UP_MAX_USD_MICROS = 10_000_000_000


# --- helpers ----------------------------------------------------------------------------


def _error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


def _not_found() -> Response:
    return _error(404, "Not found")


def m2m_strict(state: SandboxState, request: Request) -> bool:
    settings = state.settings
    credentials = parse_authorization(request)
    return (
        credentials.scheme == "basic"
        and request.path_params["app"] == settings.app_id
        and credentials.client_id == settings.m2m_client_id
        and secret_matches(credentials.client_secret, settings.m2m_client_secret)
    )


def app_client(state: SandboxState, request: Request) -> bool:
    """Any confidential sibling of the app (``m2m_…`` or ``web_…``) with its secret."""
    settings = state.settings
    credentials = parse_authorization(request)
    if credentials.scheme != "basic" or request.path_params["app"] != settings.app_id:
        return False
    pairs = {
        settings.m2m_client_id: settings.m2m_client_secret,
        settings.web_client_id: settings.web_client_secret,
    }
    expected = pairs.get(credentials.client_id or "")
    return expected is not None and secret_matches(credentials.client_secret, expected)


async def _tolerant_json(request: Request) -> dict[str, Any]:
    """pymthouse's ``readJsonBody``: malformed or non-object bodies read as ``{}``."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


class _InvalidJSON(Exception):
    pass


async def _strict_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _InvalidJSON from exc
    if not isinstance(body, dict):
        raise _InvalidJSON
    return body


def _ext(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_amount_usd(value: object) -> tuple[int | None, str | None]:
    """``parseTopUpAmountUsd``: (micros, None) or (None, the 400 message) (T#16–T#22)."""
    if value is None or value == "":
        return None, 'amountUsd is required (e.g. "25.00")'
    if isinstance(value, bool):
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value) if value != int(value) else str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    if not _AMOUNT.fullmatch(text):
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    whole, _, cents = text.partition(".")
    micros = int(whole) * 1_000_000 + int(cents.ljust(2, "0") or "0") * 10_000
    if not TOP_UP_MIN_USD_MICROS <= micros <= TOP_UP_MAX_USD_MICROS:
        return None, "amountUsd must be between $1.00 and $10,000.00"
    return micros, None


def _return_url(value: object, fallback: str) -> str:
    """https, or http on loopback; otherwise the fallback (pymthouse's dashboard URL)."""
    if isinstance(value, str):
        parts = urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value
    return fallback


def _dashboard(state: SandboxState, suffix: str) -> str:
    return f"{state.settings.public_url}{suffix}"


def _checkout_url(state: SandboxState, session_id: str) -> str:
    return f"{state.settings.public_url}/checkout/c/pay/{session_id}"


# --- billing state (src/lib/billing/billing-state.ts resolveBillingState) ----------------


def _explain(
    status: str, reason: str | None, spendable: int, ceiling: int, left: int
) -> dict[str, str]:
    if status == "active":
        detail = (
            f"You have ${usd_text(spendable)} of credit remaining. Usage draws down credits first."
        )
        return {"headline": "Credits available", "detail": detail, "docsUrl": DOCS_URL}
    if status == "overage":
        detail = (
            "Included usage and prepaid credits are used up, so usage is now invoiced "
            "automatically as it accrues."
        )
        if ceiling:
            detail += (
                f" You can accrue up to ${usd_text(ceiling)} of unbilled usage while those "
                "invoices are collected."
            )
        return {"headline": "Usage is billed as it accrues", "detail": detail, "docsUrl": DOCS_URL}
    if status == "at_risk":
        detail = (
            f"An invoice for your recent usage is being collected. ${usd_text(left)} of your "
            f"${usd_text(ceiling)} spending buffer is left; requests keep working unless the "
            "buffer runs out first."
        )
        return {"headline": "Collecting recent usage", "detail": detail, "docsUrl": DOCS_URL}
    blocked = {
        "no_payment_method": "Add a payment method to keep making requests. Usage past your "
        "credits is billed automatically once one is on file.",
        "overage_not_available": "Your credits are used up and this account cannot bill usage "
        "automatically. Add funds to resume.",
        "debt_ceiling_reached": f"You have reached the ${usd_text(ceiling)} spending buffer while "
        "payment for recent usage is still being collected. Requests resume as soon as that "
        "payment clears.",
        "billing_unavailable": "Billing could not be confirmed right now, so requests are paused. "
        "This usually clears on its own.",
    }
    detail = blocked.get(reason or "", "Requests are paused.")
    return {"headline": "Requests are paused", "detail": detail, "docsUrl": DOCS_URL}


def _posture(
    *, on: bool, spendable: int, eligible: bool, has_default: bool | None, ceiling: int,
    debt: int | None, lead: int,
) -> tuple[str, str | None]:  # fmt: skip
    if not on:
        return "blocked", "billing_unavailable"
    if spendable > 0:
        return "active", None
    if not eligible:
        return "blocked", "no_payment_method" if has_default is False else "overage_not_available"
    if ceiling <= 0 or debt is None:
        return "overage", None
    if debt >= ceiling:
        return "blocked", "debt_ceiling_reached"
    if lead > 0 and ceiling - debt <= lead:
        return "at_risk", None
    return "overage", None


_NEXT_ACTION = {
    "no_payment_method": "add_payment_method",
    "overage_not_available": "add_funds",
    "debt_ceiling_reached": "awaiting_settlement",
}


def billing_state_json(state: SandboxState, external_user_id: str | None) -> dict[str, Any]:
    book = state.billing
    on = state.billing_on
    now = datetime.now(UTC)
    merchant = book.is_merchant
    customer = book.customer(book.customer_key(external_user_id))
    ceiling = book.ceiling_usd_micros
    lead = min(ceiling // 2, LEAD_CAP_USD_MICROS)
    if on:
        prepaid = max(0, customer.prepaid_usd_micros)
        included_total = book.included_total(customer)
        included_left = book.included_remaining(customer, now)
        debt: int | None = book.unbilled_debt(customer)
        eligible = book.overage_eligible(customer)
        has_default: bool | None = customer.has_default_card
        plan = book.live_plan(customer)
        source_plan: dict[str, Any] | None = {"id": plan.id, "name": plan.name, "type": plan.type}
        debt_source = "meter_estimate"
    else:
        prepaid = included_total = included_left = 0
        debt = 0 if external_user_id is not None else None  # T#11 vs T#12
        eligible = False
        has_default = False if merchant else None  # T#94 vs T#11
        source_plan = None
        debt_source = "unavailable"
    spendable = prepaid + included_left
    status, reason = _posture(
        on=on, spendable=spendable, eligible=eligible, has_default=has_default,
        ceiling=ceiling, debt=debt, lead=lead,
    )  # fmt: skip
    left = None if debt is None or ceiling <= 0 else max(0, ceiling - debt)
    card = next((c for c in customer.cards if c.id == customer.default_card_id), None)
    if status == "at_risk":
        next_action = "awaiting_settlement"
    elif status == "blocked":
        next_action = _NEXT_ACTION.get(reason or "", "none")
    else:
        next_action = "none"
    return {
        "asOf": iso_millis(now),
        "subject": {
            "type": "end_user" if merchant else "owner",
            "externalUserId": external_user_id,
            "billingMode": book.mode,
        },
        "status": status,
        "canSpend": status != "blocked",
        "reason": reason,
        "funding": {
            "prepaid": money(prepaid),
            "included": money(included_left),
            "includedUsage": {
                "total": money(included_total),
                "remaining": money(included_left),
                "consumed": money(max(0, included_total - included_left)),
                "resetsAt": iso_millis(month_end(now)),
                "sourcePlan": source_plan,
            },
            "spendable": money(spendable),
            "net": None if debt is None else money(max(0, spendable - debt)),
            "overage": {
                "eligible": eligible,
                "ceiling": money(ceiling),
                "unbilledDebt": None if debt is None else money(debt),
                "remaining": None if left is None else money(left),
                "utilizationBps": (
                    None if debt is None or ceiling <= 0 else min(10_000, debt * 10_000 // ceiling)
                ),
                "debtSource": debt_source,
            },
        },
        "collection": {
            "mode": "progressive_invoice",
            "collector": "settlement_connect" if merchant else "openmeter_stripe",
            "paymentMethod": {
                "hasDefault": has_default,
                "brand": card.brand if on and card else None,
                "last4": card.last4 if on and card else None,
            },
            "nextAction": next_action,
            "leadThreshold": money(lead),
            "minimumCharge": money(MINIMUM_CHARGE_USD_MICROS),
            "cycle": "P1M",
            "collectionInterval": "P1D",
            "lastRaisedAt": None,
            "nextRaiseEligibleAt": None,
        },
        "explain": _explain(status, reason, spendable, ceiling, left or 0),
    }


def _subject(
    state: SandboxState, request: Request, external_user_id: str | None = None
) -> tuple[str | None, Response | None]:
    ext = external_user_id or _ext(request.query_params.get("externalUserId"))
    if state.billing.is_merchant and ext is None:
        return None, _error(400, EXT_REQUIRED_MERCHANT)
    return ext, None


# --- wallet, state, top-up (M2M-strict) --------------------------------------------------


async def billing_state(request: Request) -> Response:
    state = get_state(request)
    if not m2m_strict(state, request):
        return _not_found()
    ext, problem = _subject(state, request)
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
        return _not_found()
    if request.method == "PATCH":
        return await _wallet_patch(state, request)
    ext, problem = _subject(state, request)
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
    body = await _tolerant_json(request)
    book = state.billing
    ext = _ext(body.get("externalUserId"))
    if not book.is_merchant:
        return _error(
            409, "Auto top-up is available for merchant end-users only",
            code="auto_topup_merchant_only",
        )  # fmt: skip
    if ext is None:
        return _error(400, EXT_REQUIRED_MERCHANT)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        return _error(400, "enabled must be a boolean")
    customer = book.customer(book.customer_key(ext))
    amount = customer.auto_top_up_usd_micros or DEFAULT_AUTO_TOP_UP_USD_MICROS
    if "amountUsd" in body:
        parsed, message = parse_amount_usd(body["amountUsd"])
        if message is not None:
            return _error(400, message)
        amount = parsed or amount
    if enabled and not (state.billing_on and customer.has_default_card):
        return _error(
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
        return _not_found()
    body = await _tolerant_json(request)
    micros, message = parse_amount_usd(body.get("amountUsd"))
    if message is not None or micros is None:
        return _error(400, message or "amountUsd is required")
    book = state.billing
    ext = _ext(body.get("externalUserId"))
    if book.is_merchant:
        if ext is None:
            return _error(400, EXT_REQUIRED_MERCHANT)
        if not book.connect_ready:
            return _error(409, "Merchant Stripe Connect is not ready to accept payments")
    if not state.billing_on:
        return _error(503, BILLING_UNAVAILABLE)
    fallback = _dashboard(state, "/billing?topup=succeeded")
    # Only the owner_rollup branch forwards Idempotency-Key to Stripe (§6.4).
    key = None if book.is_merchant else request.headers.get("idempotency-key")
    known = book.sessions.get(book.idempotent_sessions.get(key or "", ""))
    session = known or book.new_session(
        mode="payment",
        customer_key=book.customer_key(ext),
        success_url=_return_url(body.get("successUrl"), fallback),
        cancel_url=_return_url(body.get("cancelUrl"), _dashboard(state, "/billing")),
        amount_usd_micros=micros,
    )
    if key:
        book.idempotent_sessions[key] = session.id
    logger.info("top-up checkout %s for %s micros", session.id, micros)
    return json_response(
        {
            "checkoutUrl": _checkout_url(state, session.id),
            "sessionId": session.id,
            "amountUsdMicros": str(micros),
        }
    )


def _cards_json(customer: Customer) -> list[dict[str, Any]]:
    return [card.as_json(is_default=card.id == customer.default_card_id) for card in customer.cards]


async def wallet_payment_methods(request: Request) -> Response:
    """``GET``/``POST …/billing/wallet/payment-methods`` (T#24, T#25, T#103, T#104)."""
    state = get_state(request)
    if not m2m_strict(state, request):
        return _not_found()
    book = state.billing
    if request.method == "GET":
        ext, problem = _subject(state, request)
        if problem is not None:
            return problem
        customer = book.customer(book.customer_key(ext))
        visible = state.billing_on and (book.connect_ready or not book.is_merchant)
        return json_response({"paymentMethods": _cards_json(customer) if visible else []})
    body = await _tolerant_json(request)
    ext, problem = _subject(state, request, _ext(body.get("externalUserId")))
    if problem is not None:
        return problem
    if not state.billing_on:
        return _error(503, BILLING_UNAVAILABLE)
    if book.is_merchant and not book.connect_ready:
        return _error(409, "Merchant Stripe Connect is not ready to accept payments")
    return _setup_session(state, ext, body)


def _setup_session(state: SandboxState, ext: str | None, body: dict[str, Any]) -> Response:
    book = state.billing
    customer = book.customer(book.customer_key(ext))
    fallback = _dashboard(state, "/billing?setup=succeeded")
    session = book.new_session(
        mode="setup",
        customer_key=customer.key,
        success_url=_return_url(body.get("successUrl"), fallback),
        cancel_url=_return_url(body.get("cancelUrl"), _dashboard(state, "/billing")),
    )
    return json_response(
        {
            "checkoutUrl": _checkout_url(state, session.id),
            "sessionId": session.id,
            "customerId": customer.key,
            "hasDefaultPaymentMethod": customer.has_default_card,
        }
    )


# --- plans and subscriptions (app client or session) --------------------------------------


async def plans(request: Request) -> Response:
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    return json_response(
        {
            "apiVersion": 1,
            "plans": [
                plan.as_v1(state.settings.app_id, state.billing_on)
                for plan in state.billing.plans.values()
            ],
        }
    )


def _plan_problem(book: BillingBook, plan: Plan | None, on: bool) -> Response | None:
    if plan is None:
        return _error(400, "Plan not found")
    if plan.status == "phase_out":
        return _error(400, "Plan is being phased out and cannot accept new subscribers")
    if plan.status != "active":
        return _error(400, "Plan is not active")
    if plan.sync_status(on) != "synced":
        return _error(400, "Plan is not synced to OpenMeter")
    return None


def _subscribe(state: SandboxState, customer: Customer, plan: Plan) -> Subscription:
    """Create or switch the subscription now; a priced plan's fee is invoiced (paid)."""
    book = state.billing
    subscription = Subscription(
        id=f"sub_{uuid.uuid4().hex[:24]}", plan_id=plan.id, started_at=datetime.now(UTC)
    )
    customer.subscription = subscription
    if plan.price_usd_micros > 0:
        book.new_invoice(
            customer, total_usd_micros=plan.price_usd_micros, invoice_type="stripe_connect"
        )
    return subscription


async def checkout(request: Request) -> Response:
    """``POST …/billing/checkout`` (T#35–T#39, T#109–T#111): strict JSON."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    try:
        body = await _strict_json(request)
    except _InvalidJSON:
        return _error(400, "Invalid JSON")
    plan_id, ext = _ext(body.get("planId")), _ext(body.get("externalUserId"))
    if plan_id is None or ext is None:
        return _error(400, "planId and externalUserId are required")
    book = state.billing
    if not book.is_merchant or ext.startswith("owner:"):
        return _error(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    plan = book.plans.get(plan_id)
    problem = _plan_problem(book, plan, state.billing_on)
    if problem is not None or plan is None:
        return problem or _error(400, "Plan not found")
    customer = book.customer(book.customer_key(ext))
    if book.live_plan(customer).id == plan.id:
        return _error(400, "User is already on this plan")
    if not book.connect_ready:
        return _error(403, "Merchant Stripe Connect onboarding is required before checkout")
    success = _return_url(body.get("successUrl"), _dashboard(state, "/settings?tab=payments"))
    if plan.requires_payment_method and not customer.has_default_card:
        return _setup_session_checkout(state, customer, body, success)
    subscription = _subscribe(state, customer, plan)
    return json_response({"checkoutUrl": success, "subscriptionId": subscription.id})


def _setup_session_checkout(
    state: SandboxState, customer: Customer, body: dict[str, Any], success: str
) -> Response:
    session = state.billing.new_session(
        mode="setup",
        customer_key=customer.key,
        success_url=success,
        cancel_url=_return_url(body.get("cancelUrl"), success),
    )
    return json_response({"checkoutUrl": _checkout_url(state, session.id)})


def _plan_surface(plan: Plan, effective_at: datetime | None) -> dict[str, Any]:
    included = plan.included_usd_micros
    return {
        "id": plan.id,
        "name": plan.name,
        "type": plan.type,
        "includedUsage": (
            None if included is None else {"usdMicros": str(included), "usd": usd_text(included)}
        ),
        "effectiveAt": None if effective_at is None else iso_millis(effective_at),
    }


def _period(started: datetime) -> tuple[datetime, datetime]:
    return datetime(started.year, started.month, 1, tzinfo=UTC), month_end(started)


def subscription_json(state: SandboxState, ext: str) -> dict[str, Any]:
    book = state.billing
    empty = {
        "externalUserId": ext,
        "subscription": None,
        "pendingCancel": None,
        "livePlan": None,
        "pendingPlan": None,
        "source": "openmeter",
    }
    if not state.billing_on:
        return empty
    customer = book.customer(book.customer_key(ext))
    if customer.subscription is None:
        # The Starter subscription every merchant eu_ customer is given at provisioning
        # (ensureStarterSubscriptionForAppUser); under owner_rollup: the owner's.
        customer.subscription = Subscription(
            id=f"sub_{uuid.uuid4().hex[:24]}",
            plan_id=book.starter.id,
            started_at=datetime.now(UTC),
        )
    subscription = customer.subscription
    plan = book.live_plan(customer)
    start, end = _period(subscription.started_at)
    pending_cancel = None
    pending_plan = None
    if subscription.cancel_at_period_end:
        pending_cancel = {
            "subscriptionId": subscription.id,
            "planId": plan.id,
            "planKey": plan.name,
            "planName": plan.name,
            "effectiveAt": iso_millis(end),
        }
        pending_plan = _plan_surface(book.starter, end)
    return {
        "externalUserId": ext,
        "source": "openmeter",
        "actionRequired": None,
        "plan": {
            "id": plan.id,
            "status": plan.status,
            "phaseOutAt": None,
            "replacementPlanId": None,
        },
        "pendingCancel": pending_cancel,
        "livePlan": _plan_surface(plan, subscription.started_at),
        "pendingPlan": pending_plan,
        "subscription": {
            "id": subscription.id,
            "status": "active",
            "planId": plan.id,
            "planName": plan.name,
            "planType": plan.type,
            "openmeterPlanKey": plan.name,
            "currentPeriodStart": iso_millis(start),
            "currentPeriodEnd": iso_millis(end),
            "openmeterSubscriptionId": subscription.id,
            "stripeCheckoutSessionId": None,
            "createdAt": None,
            "cancelledAt": None,
        },
    }


async def user_subscription(request: Request) -> Response:
    """``GET``/``DELETE …/users/{ext}/subscription`` (T#8, T#40, T#46–T#48, T#112, T#115)."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    ext = request.path_params["ext"]
    if request.method == "GET":
        return json_response(subscription_json(state, ext))
    body = await _tolerant_json(request)
    if body.get("confirm") is not True:
        return _error(
            400, "Confirm to cancel at the end of this billing cycle", code="confirm_required"
        )
    timing = body.get("timing", "next_billing_cycle")
    if timing not in TIMINGS:
        return _error(400, TIMING_ERROR)
    book = state.billing
    if not state.billing_on:
        return _error(503, "OpenMeter is not configured", code="openmeter_unavailable")
    if not book.is_merchant:
        return _error(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    customer = book.customer(book.customer_key(ext))
    subscription_json(state, ext)  # materialise the Starter subscription
    plan = book.live_plan(customer)
    subscription = customer.subscription
    if subscription is None:
        return _error(404, "No active subscription", code="no_subscription")
    if plan.is_starter_default:
        return _error(404, "Already on the Starter plan", code="already_starter")
    _, end = _period(subscription.started_at)
    if timing == "immediate":
        customer.subscription = Subscription(
            id=f"sub_{uuid.uuid4().hex[:24]}", plan_id=book.starter.id,
            started_at=datetime.now(UTC),
        )  # fmt: skip
        return json_response(
            {
                "subscriptionId": customer.subscription.id,
                "planId": book.starter.id,
                "planKey": book.starter.name,
                "scheduledPlanKey": None,
                "effectiveAt": iso_millis(datetime.now(UTC)),
            }
        )
    already = subscription.cancel_at_period_end
    subscription.cancel_at_period_end = True
    answer: dict[str, Any] = {
        "subscriptionId": subscription.id,
        "planId": plan.id,
        "planKey": plan.name,
        "scheduledPlanKey": book.starter.name,
        "effectiveAt": iso_millis(end),
    }
    if already:
        answer["alreadyScheduled"] = True
    return json_response(answer)


async def pending_change(request: Request) -> Response:
    """``DELETE …/subscription/pending-change`` (T#49, T#50): resume a scheduled cancel."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    body = await _tolerant_json(request)
    if body.get("confirm") is not True:
        return _error(
            400,
            "Confirm to keep your plan and cancel the scheduled cancellation",
            code="confirm_required",
        )
    book = state.billing
    if not state.billing_on:
        return _error(503, "OpenMeter is not configured", code="openmeter_unavailable")
    if not book.is_merchant:
        return _error(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    customer = book.customer(book.customer_key(request.path_params["ext"]))
    subscription = customer.subscription
    if subscription is None or not subscription.cancel_at_period_end:
        return _error(404, "Nothing to resume", code="nothing_to_resume")
    subscription.cancel_at_period_end = False
    plan = book.live_plan(customer)
    return json_response(
        {"resumed": True, "subscriptionId": subscription.id, "planId": plan.id,
         "planKey": plan.name}
    )  # fmt: skip


async def subscription_change(request: Request) -> Response:
    """``POST …/users/{ext}/subscription/change`` (T#42–T#45, T#113, T#114)."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    try:
        body = await _strict_json(request)
    except _InvalidJSON:
        return _error(400, "Invalid JSON")
    plan_id = _ext(body.get("planId"))
    if plan_id is None:
        return _error(400, "planId is required")
    timing = body.get("timing")
    if timing is not None and timing not in TIMINGS:
        return _error(400, TIMING_ERROR)
    ext = request.path_params["ext"]
    book = state.billing
    if not book.is_merchant or ext.startswith("owner:"):
        return _error(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    plan = book.plans.get(plan_id)
    # Everything else the change library throws is a 502 here (T#113, T#114).
    if not state.billing_on or plan is None or plan.sync_status(True) != "synced":
        return _error(502, "Subscription change failed")
    if plan.status != "active":
        return _error(502, "Subscription change failed")
    customer = book.customer(book.customer_key(ext))
    subscription_json(state, ext)
    current = book.live_plan(customer)
    if current.id == plan.id:
        return _error(400, "User is already on this plan")
    if not book.connect_ready:
        return _error(403, "Merchant Stripe Connect onboarding is required before checkout")
    upgrade = plan.price_usd_micros > current.price_usd_micros or (
        current.is_starter_default and plan.type == "usage"
    )
    chosen = timing or ("immediate" if upgrade else "next_billing_cycle")
    success = _return_url(body.get("successUrl"), _dashboard(state, "/settings?tab=payments"))
    subscription = customer.subscription
    if plan.requires_payment_method and not customer.has_default_card:
        session = book.new_session(
            mode="setup",
            customer_key=customer.key,
            success_url=success,
            cancel_url=_return_url(body.get("cancelUrl"), success),
        )
        return json_response(
            {
                "subscriptionId": subscription.id if subscription else None,
                "planId": current.id,
                "effectiveAt": None,
                "timing": chosen,
                "checkoutUrl": _checkout_url(state, session.id),
            }
        )
    new = _subscribe(state, customer, plan)
    return json_response(
        {
            "subscriptionId": new.id,
            "planId": plan.id,
            "effectiveAt": iso_millis(new.started_at),
            "timing": chosen,
        }
    )


# --- invoices and payment methods ---------------------------------------------------------


def _page_param(value: str | None, default: int, maximum: int) -> int:
    if value is None or not value.isdigit():
        return default
    return max(1, min(int(value), maximum))


async def user_invoices(request: Request) -> Response:
    """``GET …/users/{ext}/invoices`` (T#51, T#116): fails open to an empty page."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    page = _page_param(request.query_params.get("page"), 1, 10_000)
    size = _page_param(request.query_params.get("pageSize"), 20, 100)
    items: list[dict[str, Any]] = []
    book = state.billing
    if state.billing_on and book.is_merchant:
        customer = book.customer(book.customer_key(request.path_params["ext"]))
        items = [invoice.as_json() for invoice in reversed(customer.invoices)]
    return json_response(
        {
            "items": items[(page - 1) * size : page * size],
            "page": page,
            "pageSize": size,
            "totalCount": len(items),
        }
    )


async def invoice_hosted_url(request: Request) -> Response:
    """``GET …/invoices/{id}/hosted-url`` (T#52 503, T#117 404)."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    book = state.billing
    if not book.is_merchant and not state.billing_on:
        return _error(503, "Billing unavailable")
    customer = book.customer(book.customer_key(request.path_params["ext"]))
    invoice_id = request.path_params["invoice"]
    found = next((item for item in customer.invoices if item.id == invoice_id), None)
    if found is None or not state.billing_on:
        return _not_found()
    base = f"{state.settings.public_url}/checkout/invoices/{found.id}"
    return json_response({"hostedInvoiceUrl": base, "invoicePdf": f"{base}.pdf"})


async def user_payment_methods(request: Request) -> Response:
    """``GET``/``POST …/users/{ext}/payment-methods`` (T#53, T#54, T#118, T#119)."""
    state = get_state(request)
    if not app_client(state, request):
        return _not_found()
    book = state.billing
    ext = request.path_params["ext"]
    customer = book.customer(book.customer_key(ext))
    if request.method == "GET":
        visible = state.billing_on and (book.connect_ready or not book.is_merchant)
        return json_response({"paymentMethods": _cards_json(customer) if visible else []})
    body = await _tolerant_json(request)
    if not state.billing_on:
        return _error(400, OPENMETER_NOT_CONFIGURED)
    if book.is_merchant and not book.connect_ready:
        return _error(403, "Merchant Stripe Connect onboarding is required before checkout")
    return _setup_session(state, ext if book.is_merchant else None, body)


routes = [
    Route("/api/v1/apps/{app}/billing/state", billing_state, methods=["GET"]),
    Route("/api/v1/apps/{app}/billing/wallet", wallet, methods=["GET", "PATCH"]),
    Route("/api/v1/apps/{app}/billing/wallet/top-up", top_up, methods=["POST"]),
    Route(
        "/api/v1/apps/{app}/billing/wallet/payment-methods",
        wallet_payment_methods,
        methods=["GET", "POST"],
    ),
    Route("/api/v1/apps/{app}/billing/checkout", checkout, methods=["POST"]),
    Route("/api/v1/apps/{app}/plans", plans, methods=["GET"]),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription",
        user_subscription,
        methods=["GET", "DELETE"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription/change",
        subscription_change,
        methods=["POST"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription/pending-change",
        pending_change,
        methods=["DELETE"],
    ),
    Route("/api/v1/apps/{app}/users/{ext}/invoices", user_invoices, methods=["GET"]),
    Route(
        "/api/v1/apps/{app}/users/{ext}/invoices/{invoice}/hosted-url",
        invoice_hosted_url,
        methods=["GET"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/payment-methods",
        user_payment_methods,
        methods=["GET", "POST"],
    ),
]
