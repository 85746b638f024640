"""App-client routes: ``plans`` (v1), ``billing/checkout``, ``users/{ext}/subscription``
(GET, DELETE = cancel), ``…/subscription/change`` and ``…/subscription/pending-change``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.billing import (
    BillingBook,
    Customer,
    Plan,
    Subscription,
    month_end,
    usd_text,
)
from sandbox.pymthouse.billing.common import (
    OWNER_WALLET,
    TIMING_ERROR,
    TIMINGS,
    InvalidJSONBodyError,
    app_client,
    checkout_url,
    clean_ext,
    dashboard_url,
    error_response,
    not_found,
    return_url,
    strict_json,
    tolerant_json,
)
from sandbox.state import SandboxState, iso_millis
from sandbox.web import get_state, json_response

# --- plans and subscriptions (app client or session) --------------------------------------


async def plans(request: Request) -> Response:
    state = get_state(request)
    if not app_client(state, request):
        return not_found()
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
        return error_response(400, "Plan not found")
    if plan.status == "phase_out":
        return error_response(400, "Plan is being phased out and cannot accept new subscribers")
    if plan.status != "active":
        return error_response(400, "Plan is not active")
    if plan.sync_status(on) != "synced":
        return error_response(400, "Plan is not synced to OpenMeter")
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
        return not_found()
    try:
        body = await strict_json(request)
    except InvalidJSONBodyError:
        return error_response(400, "Invalid JSON")
    plan_id, ext = clean_ext(body.get("planId")), clean_ext(body.get("externalUserId"))
    if plan_id is None or ext is None:
        return error_response(400, "planId and externalUserId are required")
    book = state.billing
    if not book.is_merchant or ext.startswith("owner:"):
        return error_response(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    plan = book.plans.get(plan_id)
    problem = _plan_problem(book, plan, state.billing_on)
    if problem is not None or plan is None:
        return problem or error_response(400, "Plan not found")
    customer = book.customer(book.customer_key(ext))
    if book.live_plan(customer).id == plan.id:
        return error_response(400, "User is already on this plan")
    if not book.connect_ready:
        return error_response(403, "Merchant Stripe Connect onboarding is required before checkout")
    success = return_url(body.get("successUrl"), dashboard_url(state, "/settings?tab=payments"))
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
        cancel_url=return_url(body.get("cancelUrl"), success),
    )
    return json_response({"checkoutUrl": checkout_url(state, session.id)})


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
        return not_found()
    ext = request.path_params["ext"]
    if request.method == "GET":
        return json_response(subscription_json(state, ext))
    body = await tolerant_json(request)
    if body.get("confirm") is not True:
        return error_response(
            400, "Confirm to cancel at the end of this billing cycle", code="confirm_required"
        )
    timing = body.get("timing", "next_billing_cycle")
    if timing not in TIMINGS:
        return error_response(400, TIMING_ERROR)
    book = state.billing
    if not state.billing_on:
        return error_response(503, "OpenMeter is not configured", code="openmeter_unavailable")
    if not book.is_merchant:
        return error_response(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    customer = book.customer(book.customer_key(ext))
    subscription_json(state, ext)  # materialise the Starter subscription
    plan = book.live_plan(customer)
    subscription = customer.subscription
    if subscription is None:
        return error_response(404, "No active subscription", code="no_subscription")
    if plan.is_starter_default:
        return error_response(404, "Already on the Starter plan", code="already_starter")
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
        return not_found()
    body = await tolerant_json(request)
    if body.get("confirm") is not True:
        return error_response(
            400,
            "Confirm to keep your plan and cancel the scheduled cancellation",
            code="confirm_required",
        )
    book = state.billing
    if not state.billing_on:
        return error_response(503, "OpenMeter is not configured", code="openmeter_unavailable")
    if not book.is_merchant:
        return error_response(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    customer = book.customer(book.customer_key(request.path_params["ext"]))
    subscription = customer.subscription
    if subscription is None or not subscription.cancel_at_period_end:
        return error_response(404, "Nothing to resume", code="nothing_to_resume")
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
        return not_found()
    try:
        body = await strict_json(request)
    except InvalidJSONBodyError:
        return error_response(400, "Invalid JSON")
    plan_id = clean_ext(body.get("planId"))
    if plan_id is None:
        return error_response(400, "planId is required")
    timing = body.get("timing")
    if timing is not None and timing not in TIMINGS:
        return error_response(400, TIMING_ERROR)
    ext = request.path_params["ext"]
    book = state.billing
    if not book.is_merchant or ext.startswith("owner:"):
        return error_response(400, OWNER_WALLET, code="owner_wallet_not_app_user")
    plan = book.plans.get(plan_id)
    # Everything else the change library throws is a 502 here (T#113, T#114).
    if not state.billing_on or plan is None or plan.sync_status(True) != "synced":
        return error_response(502, "Subscription change failed")
    if plan.status != "active":
        return error_response(502, "Subscription change failed")
    customer = book.customer(book.customer_key(ext))
    subscription_json(state, ext)
    current = book.live_plan(customer)
    if current.id == plan.id:
        return error_response(400, "User is already on this plan")
    if not book.connect_ready:
        return error_response(403, "Merchant Stripe Connect onboarding is required before checkout")
    upgrade = plan.price_usd_micros > current.price_usd_micros or (
        current.is_starter_default and plan.type == "usage"
    )
    chosen = timing or ("immediate" if upgrade else "next_billing_cycle")
    success = return_url(body.get("successUrl"), dashboard_url(state, "/settings?tab=payments"))
    subscription = customer.subscription
    if plan.requires_payment_method and not customer.has_default_card:
        session = book.new_session(
            mode="setup",
            customer_key=customer.key,
            success_url=success,
            cancel_url=return_url(body.get("cancelUrl"), success),
        )
        return json_response(
            {
                "subscriptionId": subscription.id if subscription else None,
                "planId": current.id,
                "effectiveAt": None,
                "timing": chosen,
                "checkoutUrl": checkout_url(state, session.id),
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
