"""``BillingState`` (pymthouse/pymthouse@5ee7cfc7 ``src/lib/billing/billing-state.ts``
``resolveBillingState``): posture, funding, collection and the explain copy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.billing import (
    LEAD_CAP_USD_MICROS,
    MINIMUM_CHARGE_USD_MICROS,
    money,
    month_end,
    usd_text,
)
from sandbox.pymthouse.billing.common import (
    DOCS_URL,
)
from sandbox.state import SandboxState, iso_millis

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
