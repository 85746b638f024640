"""Users change their own plan: what a change costs, when it takes effect, and applying it.

The rules (owner_rollup: the operator bills its own users; docs/billing.md "Changing
plans"):

* **Onto a subscription** (a plan with a fee) from anything that is not an active
  subscription: the whole fee now, paid by card; the period runs from the payment for
  ``BILLING_SUBSCRIPTION_PERIOD_DAYS``.
* **To a dearer subscription** while one is active: the difference for the rest of the
  current period now, ``ceil((new − old) × remaining / period)``, paid by card; the period
  end stays (Stripe's proration, to the micro).
* **To a cheaper subscription, or off a subscription** while it is active: at the end of
  the period, nothing charged or refunded now; until then the current plan stays. This is
  also what "cancel" is (to ``BILLING_DEFAULT_PLAN``). A scheduled change can be undone
  ("resume") until it is due.
* **Between plans without a fee** (free, pay as you go, pay per image), or from a
  subscription that has ended: at once, nothing charged.

A change that costs money is a quote first (``plan_change_quote``, shown in dollars);
the payment is the payments service's, and a succeeded payment is *fulfilled* here
(``subscription_fulfil``) exactly once per payment, whatever order its confirmations
arrive in. No HTTP happens under the account lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing.errors import BillingError
from billing.lock_objects import account_lock
from billing.models import Account, EntryEffect, EntryKind, LedgerEntry, Plan
from billing.money import format_usd, format_usd_micros, fraction_ceil
from billing.plan_policy import plan_policy
from billing.services.accounts import account_change_plan
from billing.services.ledger import ledger_entry_append

logger = logging.getLogger(__name__)

Timing = Literal["now", "period_end"]


class PlanChangeError(BillingError):
    """The change asked for cannot be made (same plan, inactive plan, nothing to resume)."""

    code = "plan_change_refused"
    status = 409


@dataclass(frozen=True)
class PlanChangeQuote:
    """What moving to ``plan`` does, said before the user confirms it."""

    plan: Plan
    timing: Timing
    effective_at: datetime
    #: Paid by card now (0: nothing to pay): whole cents, at least Stripe's minimum.
    charge_now_micros: int
    #: The subscription period after the change, when the target is a subscription.
    period_starts_at: datetime | None
    period_ends_at: datetime | None
    #: One sentence in dollars: "You pay $29.00 now for Dec 3 – Jan 2, 2027."
    summary: str


#: Stripe charges whole cents, and at least $0.50 in USD (Stripe docs, "Minimum and
#: maximum charge amounts", docs/upstream.md "Stripe (localstripe)").
MICROS_PER_CENT = 10_000
STRIPE_MINIMUM_CHARGE_MICROS = 500_000


def card_amount(micros: int) -> int:
    """What a card is charged for ``micros`` owed: rounded up to the cent, at least
    Stripe's minimum charge (0 stays 0: nothing to pay)."""
    if micros <= 0:
        return 0
    cents = -(-micros // MICROS_PER_CENT)
    return max(cents * MICROS_PER_CENT, STRIPE_MINIMUM_CHARGE_MICROS)


def _period() -> timedelta:
    return timedelta(days=settings.BILLING_SUBSCRIPTION_PERIOD_DAYS)


def _day(value: datetime) -> str:
    return f"{value:%b} {value.day}, {value.year}"


def subscription_active(account: Account, *, now: datetime) -> bool:
    starts, ends = account.subscription_starts_at, account.subscription_ends_at
    return (
        plan_policy(account.plan).has_subscription
        and starts is not None
        and ends is not None
        and starts <= now < ends
    )


def plan_change_quote(*, account: Account, plan: Plan, now: datetime) -> PlanChangeQuote:
    """What a change of ``account`` to ``plan`` at ``now`` costs and when it applies.

    Raises ``PlanChangeError`` for the current plan (unless its subscription has ended:
    then it is a renewal) and for a plan that is not offered.
    """
    if not plan.is_active:
        raise PlanChangeError("That plan isn't offered any more.", code="plan_inactive")
    active = subscription_active(account, now=now)
    target_fee = plan.subscription_fee_micros if plan_policy(plan).has_subscription else 0
    if plan.pk == account.plan_id and (active or not plan_policy(plan).has_subscription):
        raise PlanChangeError("You're already on this plan.", code="same_plan")

    if not active:
        if target_fee:
            ends = now + _period()
            return PlanChangeQuote(
                plan=plan,
                timing="now",
                effective_at=now,
                charge_now_micros=card_amount(target_fee),
                period_starts_at=now,
                period_ends_at=ends,
                summary=(
                    f"You pay {format_usd(target_fee)} now for {plan.name} from "
                    f"{_day(now)} to {_day(ends)}; it renews at that price unless you cancel."
                ),
            )
        return PlanChangeQuote(
            plan=plan,
            timing="now",
            effective_at=now,
            charge_now_micros=0,
            period_starts_at=None,
            period_ends_at=None,
            summary=f"You move to {plan.name} now; nothing is charged for the change.",
        )

    assert account.subscription_starts_at is not None
    assert account.subscription_ends_at is not None
    ends = account.subscription_ends_at
    current_fee = account.plan.subscription_fee_micros
    if target_fee > current_fee:
        # The rest of the period as an exact fraction (timedeltas are exact to the µs).
        remaining = Fraction(
            (ends - now) // timedelta(microseconds=1),
            (ends - account.subscription_starts_at) // timedelta(microseconds=1),
        )
        exact = fraction_ceil((target_fee - current_fee) * remaining)
        charge = card_amount(exact)
        if charge == exact:
            rounding = ""
        elif charge == STRIPE_MINIMUM_CHARGE_MICROS:
            rounding = (
                f" ({format_usd_micros(exact)} raised to {format_usd(charge)}, the smallest "
                "card payment)"
            )
        else:
            rounding = f" ({format_usd_micros(exact)} rounded up to the cent)"
        return PlanChangeQuote(
            plan=plan,
            timing="now",
            effective_at=now,
            charge_now_micros=charge,
            period_starts_at=account.subscription_starts_at,
            period_ends_at=ends,
            summary=(
                f"You pay {format_usd(charge)} now{rounding}: the difference between "
                f"{format_usd(target_fee)} and {format_usd(current_fee)} for the rest of this "
                f"period (to {_day(ends)}); then {format_usd(target_fee)} per period."
            ),
        )
    if target_fee:
        summary = (
            f"{plan.name} starts when this period ends, on {_day(ends)}, at "
            f"{format_usd(target_fee)} per period; you keep {account.plan.name} until then. "
            "Nothing is charged or refunded now."
        )
    else:
        summary = (
            f"You keep {account.plan.name} until {_day(ends)} and move to {plan.name} then; "
            "you won't be charged again. Nothing is refunded for the rest of this period."
        )
    return PlanChangeQuote(
        plan=plan,
        timing="period_end",
        effective_at=ends,
        charge_now_micros=0,
        period_starts_at=ends if target_fee else None,
        period_ends_at=ends + _period() if target_fee else None,
        summary=summary,
    )


@transaction.atomic
def plan_change_free(*, user: User, plan: Plan, now: datetime | None = None) -> PlanChangeQuote:
    """Make a change that costs nothing now: at once, or scheduled for the period end.

    Raises ``PlanChangeError`` if the change (re-quoted under the account lock) costs
    money now: that goes through a payment and ``subscription_fulfil``.
    """
    now = now or timezone.now()
    account = account_lock(user_id=user.pk)
    quote = plan_change_quote(account=account, plan=plan, now=now)
    if quote.charge_now_micros:
        raise PlanChangeError(
            f"This change costs {format_usd(quote.charge_now_micros)}; pay for it first.",
            code="payment_required",
        )
    if quote.timing == "period_end":
        account.pending_plan = plan
        account.save(update_fields=["pending_plan", "updated_at"])
        logger.info("billing: user %s scheduled plan %s at period end", user.pk, plan.slug)
        return quote
    account_change_plan(user=user, plan=plan, acting_user=user, reason="changed by the user")
    Account.objects.filter(pk=user.pk).update(pending_plan=None)
    return quote


@transaction.atomic
def plan_change_undo(*, user: User) -> Account:
    """Undo a scheduled change ("resume"): the current plan goes on after the period."""
    account = account_lock(user_id=user.pk)
    if account.pending_plan_id is None:
        raise PlanChangeError("There is no scheduled change to undo.", code="nothing_to_resume")
    account.pending_plan = None
    account.save(update_fields=["pending_plan", "updated_at"])
    return account


def subscription_fee_key(payment_ref: str) -> str:
    return f"subscription_fee:payment:{payment_ref}"


@transaction.atomic
def subscription_fulfil(
    *, user: User, plan: Plan, amount_micros: int, payment_ref: str, paid_at: datetime
) -> LedgerEntry:
    """Apply a paid subscription change, exactly once per payment (``payment_ref``).

    ``amount_micros`` is what the card was charged; the change applied is the one that
    payment was quoted for, re-derived at ``paid_at``: a new period (from ``paid_at``) or
    an upgrade for the rest of the current one. The fee is a ``subscription_fee`` record
    (paid by card, not from credit) naming the payment.
    """
    key = subscription_fee_key(payment_ref)
    account = account_lock(user_id=user.pk)
    existing = LedgerEntry.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing
    if subscription_active(account, now=paid_at) and account.plan_id != plan.pk:
        starts, ends = account.subscription_starts_at, account.subscription_ends_at
    elif subscription_active(account, now=paid_at):  # a renewal paid early
        assert account.subscription_ends_at is not None
        starts = account.subscription_ends_at
        ends = starts + _period()
    else:
        starts, ends = paid_at, paid_at + _period()
    assert starts is not None
    assert ends is not None
    account_change_plan(
        user=user,
        plan=plan,
        acting_user=None,
        reason=f"paid by card ({payment_ref})",
        subscription_starts_at=starts,
        subscription_ends_at=ends,
    )
    account = account_lock(user_id=user.pk)
    if account.pending_plan_id is not None:
        account.pending_plan = None
        account.save(update_fields=["pending_plan", "updated_at"])
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.SUBSCRIPTION_FEE,
        effect=EntryEffect.RECORD,
        amount_micros=amount_micros,
        reason=f"{plan.name}: {_day(starts)} to {_day(ends)}, paid by card",
        idempotency_key=key,
    )
    logger.info(
        "billing: subscription %s for user %s paid (%s µUSD, %s)",
        plan.slug,
        user.pk,
        amount_micros,
        payment_ref,
    )
    return entry


def pending_changes_due(*, now: datetime) -> list[int]:
    """Accounts whose scheduled change is due (their period has ended)."""
    return list(
        Account.objects.filter(pending_plan__isnull=False, subscription_ends_at__lte=now)
        .order_by("subscription_ends_at")
        .values_list("pk", flat=True)[:1000]
    )


@transaction.atomic
def pending_change_apply(*, user_id: int, now: datetime) -> Account | None:
    """Apply one account's scheduled change if it is still due (idempotent)."""
    account = account_lock(user_id=user_id)
    pending = account.pending_plan
    if pending is None or account.subscription_ends_at is None:
        return None
    if account.subscription_ends_at > now:
        return None
    account_change_plan(
        user=account.user,
        plan=pending,
        acting_user=None,
        reason="scheduled change at the end of the subscription period",
    )
    account = account_lock(user_id=user_id)
    account.pending_plan = None
    account.save(update_fields=["pending_plan", "updated_at"])
    return account


def cancel_target() -> Plan:
    """The plan a cancelled subscription moves to: the default plan."""
    return Plan.objects.get(slug=settings.BILLING_DEFAULT_PLAN)
