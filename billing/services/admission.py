"""Admission, holds and charges for generations.

* ``generation_admit`` runs in the admission transaction of ``generation_create``,
  after the generation row is inserted. Free and subscription plans are counted;
  usage-based plans place a hold of the most the image may cost. A refusal raises
  ``CreditRefusedError`` and the whole transaction (row, task, upstream call) is gone.
* ``generation_charge_settle`` runs at payment time: the hold becomes a usage debit of
  the real fee × the plan's multiplier (or the plan's flat price). On the ai-gateway
  backend no fee is known and the configured estimate is the charge.
* ``generation_hold_release`` gives the hold back when nothing was paid.
* An unknown outcome keeps its hold until ``generation_usage_settle`` (the usage
  mirror found its manifest) or ``holds_resolve_stale`` (timeout: release, reported).

Every movement carries a key derived from the generation id, so each hook may run any
number of times and moves money once. All run under the account row lock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.errors import CreditRefusedError
from billing.lock_objects import account_lock
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    Hold,
    HoldStatus,
    ObservedPrice,
    Plan,
    PlanType,
)
from billing.money import apply_ratio, format_eth
from billing.services.ledger import ledger_entry_append
from inference.models import Generation, GenerationStatus
from integrations.pymthouse.money import parse_wei

logger = logging.getLogger(__name__)

_OUTCOME_UNKNOWN = "outcome_unknown"


def _estimated_fee_wei() -> int:
    return parse_wei(str(settings.BILLING_ESTIMATED_FEE_WEI))


def _markup() -> Fraction:
    return Fraction(Decimal(str(settings.LIVEPEER_MAX_PRICE_MARKUP)))


def price_observe(*, model_id: str, price_wei: int, units_per_payment: int) -> None:
    """Remember a runner's price for ``model_id``: wei per unit, and the units one payment
    buys (1 for ``fixed``, the seconds of a first ``live`` payment).

    Runs in every settlement: it writes (and so locks the model's row until commit) only
    when the price changed, so settlements of one model by many users do not queue here.
    """
    current = (
        ObservedPrice.objects.filter(model_id=model_id)
        .values_list("price_wei", "units_per_payment")
        .first()
    )
    if current == (price_wei, units_per_payment):
        return
    if current is not None:
        ObservedPrice.objects.filter(model_id=model_id).update(
            price_wei=price_wei, units_per_payment=units_per_payment, observed_at=timezone.now()
        )
        return
    try:
        with transaction.atomic():
            ObservedPrice.objects.create(
                model_id=model_id, price_wei=price_wei, units_per_payment=units_per_payment
            )
    except IntegrityError:  # another settlement recorded it first
        ObservedPrice.objects.filter(model_id=model_id).update(
            price_wei=price_wei, units_per_payment=units_per_payment
        )


def max_fee_estimate(*, model_id: str) -> int:
    """The most one image's payment may cost at the network: what the client would accept.

    The last observed runner price for the model, raised by the ``maxPrice`` markup
    exactly as the client computes ``maxPrice`` (per unit, rounded up), times the units
    one payment buys. Without an observation, the configured per-image estimate
    ``BILLING_ESTIMATED_FEE_WEI``.
    """
    observed = ObservedPrice.objects.filter(model_id=model_id).first()
    if observed is None:
        return _estimated_fee_wei()
    markup = _markup()
    return (
        apply_ratio(observed.price_wei, markup.numerator, markup.denominator)
        * observed.units_per_payment
    )


def plan_charge(*, plan: Plan, fee_wei: int) -> int:
    """What a usage-based plan charges the user for a network fee of ``fee_wei``."""
    if plan.flat_price_wei is not None:
        return plan.flat_price_wei
    return apply_ratio(fee_wei, plan.multiplier_numerator, plan.multiplier_denominator)


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def generations_counted_this_month(*, owner_id: int, now: datetime | None = None) -> int:
    """Images that count against a monthly allowance: all this month except those that
    ended without paying anything."""
    start = _month_start(now or timezone.now())
    return (
        Generation.objects.filter(owner_id=owner_id, created_at__gte=start)
        .exclude(
            Q(status__in=[GenerationStatus.FAILED, GenerationStatus.CANCELED])
            & Q(payment_claimed_at__isnull=True)
        )
        .count()
    )


def _refuse(message: str, code: str) -> CreditRefusedError:
    return CreditRefusedError(message, code=code)


def generation_admit(*, generation: Generation) -> None:
    """Admit ``generation`` (already inserted, not yet committed) or raise ``CreditRefusedError``.

    Runs inside the caller's transaction; holds the account row lock until it ends.
    """
    account = account_lock(user_id=generation.owner_id)
    plan = account.plan
    if account.suspended:
        raise _refuse(
            "Your account is suspended. Contact support to generate images again.",
            "account_suspended",
        )
    if plan.plan_type == PlanType.FREE:
        allowance = plan.monthly_generation_allowance or 0
        if generations_counted_this_month(owner_id=generation.owner_id) > allowance:
            raise _refuse(
                f"You've used all {allowance} free images for this month. "
                "Upgrade your plan to keep generating.",
                "allowance_used",
            )
        return
    if plan.plan_type == PlanType.SUBSCRIPTION:
        now = timezone.now()
        starts, ends = account.subscription_starts_at, account.subscription_ends_at
        if starts is None or ends is None or not starts <= now < ends:
            raise _refuse(
                "Your subscription isn't active. Renew it to keep generating.",
                "subscription_inactive",
            )
        cap = plan.monthly_generation_cap
        if cap is not None and generations_counted_this_month(owner_id=generation.owner_id) > cap:
            raise _refuse(
                f"You've reached your plan's {cap} images for this month.", "monthly_cap_reached"
            )
        return
    amount = plan_charge(
        plan=plan,
        fee_wei=max_fee_estimate(model_id=generation.model_id),
    )
    if amount > account.available_wei:
        raise _refuse(
            f"You're out of credit: this image may cost up to {format_eth(amount)} and you "
            f"have {format_eth(account.available_wei)} available. Add credit to keep "
            "generating.",
            "insufficient_credit",
        )
    Hold.objects.create(generation_id=generation.pk, account=account, plan=plan, amount_wei=amount)
    ledger_entry_append(
        account=account,
        kind=EntryKind.HOLD,
        effect=EntryEffect.HOLD,
        amount_wei=amount,
        reason=f"hold for image {generation.pk}",
        idempotency_key=f"hold:{generation.pk}",
        generation_id=generation.pk,
    )


@dataclass(frozen=True)
class _Settled:
    charged_wei: int
    shortfall_wei: int


def _settle(
    *,
    account: Account,
    generation_id: uuid.UUID,
    fee_wei: int,
    reason: str,
    usage_ref: str = "",
) -> _Settled | None:
    """Turn the generation's hold (if open) into a usage debit; debit directly if the hold
    was already released by a timeout. ``None`` when it was already charged."""
    key = f"usage_debit:{generation_id}"
    from billing.models import LedgerEntry

    if LedgerEntry.objects.filter(idempotency_key=key).exists():
        return None
    hold = Hold.objects.filter(generation_id=generation_id).select_related("plan").first()
    plan = account.plan
    if hold is None and plan.plan_type != PlanType.USAGE:
        return None  # counted plans: nothing to charge
    if hold is not None and hold.status == HoldStatus.OPEN:
        ledger_entry_append(
            account=account,
            kind=EntryKind.HOLD_RELEASE,
            effect=EntryEffect.RELEASE,
            amount_wei=hold.amount_wei,
            reason=f"hold settled for image {generation_id}",
            idempotency_key=f"hold_release:{generation_id}",
            generation_id=generation_id,
            usage_ref=usage_ref,
        )
    if hold is not None and hold.plan is not None:
        plan = hold.plan  # the plan that admitted the image, even if it changed since
    charge = plan_charge(plan=plan, fee_wei=fee_wei) if plan.plan_type == PlanType.USAGE else 0
    collectable = min(charge, account.available_wei)
    shortfall = charge - collectable
    if shortfall:
        # The network was paid more than the user can cover (the price rose above the
        # observed one, or the hold had timed out). Debit what is there and report.
        logger.warning(
            "billing: image %s charge %s wei exceeds the available %s wei; shortfall %s wei",
            generation_id,
            charge,
            collectable,
            shortfall,
        )
        reason = f"{reason}; uncollected shortfall {shortfall} wei"
    ledger_entry_append(
        account=account,
        kind=EntryKind.USAGE_DEBIT,
        effect=EntryEffect.DEBIT,
        amount_wei=collectable,
        reason=reason,
        idempotency_key=key,
        generation_id=generation_id,
        usage_ref=usage_ref,
    )
    if hold is not None:
        hold.status = HoldStatus.SETTLED
        hold.charged_wei = collectable
        hold.resolution = reason[:200]
        hold.resolved_at = timezone.now()
        hold.save(update_fields=["status", "charged_wei", "resolution", "resolved_at"])
    return _Settled(charged_wei=collectable, shortfall_wei=shortfall)


@transaction.atomic
def generation_charge_settle(
    *, generation_id: uuid.UUID | str, expected_fee_wei: int | None
) -> None:
    """Charge the generation at payment time (same transaction as the payment record).

    ``expected_fee_wei`` is the runner's real fee; ``None`` (ai-gateway backend, where
    pymthouse does not charge the user) charges ``BILLING_ESTIMATED_FEE_WEI``.
    Idempotent: a second call changes nothing.
    """
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        return
    account = account_lock(user_id=generation.owner_id)
    if expected_fee_wei is None:
        fee, source = _estimated_fee_wei(), "estimated fee (gateway backend)"
    else:
        fee, source = expected_fee_wei, "runner fee"
    _settle(
        account=account,
        generation_id=generation.pk,
        fee_wei=fee,
        reason=f"image {generation.pk}: {source} {fee} wei",
    )
    if generation.price_wei is not None and generation.units_paid:
        price_observe(
            model_id=generation.model_id,
            price_wei=generation.price_wei,
            units_per_payment=generation.units_paid,
        )


@transaction.atomic
def generation_usage_settle(
    *, generation_id: uuid.UUID | str, fee_wei: int, usage_ref: str
) -> bool:
    """Charge a generation from the usage mirror's metered fee (outcome was unknown).

    Does nothing when the generation was already charged (returns False). If the hold
    had already timed out and been released, the debit is taken from what is available.
    """
    generation = Generation.objects.filter(pk=generation_id).only("owner_id").first()
    if generation is None:
        hold = Hold.objects.filter(generation_id=generation_id).first()
        if hold is None:
            return False
        owner_id = hold.account_id
    else:
        owner_id = generation.owner_id
    account = account_lock(user_id=owner_id)
    settled = _settle(
        account=account,
        generation_id=uuid.UUID(str(generation_id)),
        fee_wei=fee_wei,
        reason=f"image {generation_id}: metered fee {fee_wei} wei",
        usage_ref=usage_ref,
    )
    return settled is not None


def _release(*, account: Account, hold: Hold, reason: str) -> None:
    ledger_entry_append(
        account=account,
        kind=EntryKind.HOLD_RELEASE,
        effect=EntryEffect.RELEASE,
        amount_wei=hold.amount_wei,
        reason=reason,
        idempotency_key=f"hold_release:{hold.generation_id}",
        generation_id=hold.generation_id,
    )
    hold.status = HoldStatus.RELEASED
    hold.resolution = reason[:200]
    hold.resolved_at = timezone.now()
    hold.save(update_fields=["status", "resolution", "resolved_at"])


@transaction.atomic
def generation_hold_release(*, generation_id: uuid.UUID | str, reason: str) -> None:
    """Give back the hold of a generation that ended without paying; idempotent."""
    hold = Hold.objects.filter(generation_id=generation_id).first()
    if hold is None or hold.status != HoldStatus.OPEN:
        return
    account = account_lock(user_id=hold.account_id)
    hold = Hold.objects.get(pk=hold.pk)  # re-read under the lock
    if hold.status != HoldStatus.OPEN:
        return
    _release(account=account, hold=hold, reason=f"image {generation_id}: {reason}")


@dataclass(frozen=True)
class StaleHold:
    generation_id: str
    user_id: int
    amount_wei: int
    action: str  # "settled", "released", "timed_out"
    detail: str


def _resolve_one(*, hold_id: int, now: datetime) -> StaleHold | None:
    with transaction.atomic():
        hold = Hold.objects.filter(pk=hold_id, status=HoldStatus.OPEN).first()
        if hold is None:
            return None
        account = account_lock(user_id=hold.account_id)
        hold = Hold.objects.get(pk=hold.pk)
        if hold.status != HoldStatus.OPEN:
            return None
        generation = Generation.objects.filter(pk=hold.generation_id).first()
        timeout = timedelta(seconds=settings.BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS)
        base = StaleHold(
            generation_id=str(hold.generation_id),
            user_id=hold.account_id,
            amount_wei=hold.amount_wei,
            action="",
            detail="",
        )
        if generation is None:
            _release(account=account, hold=hold, reason="image deleted; hold released")
            return replace(base, action="released", detail="deleted")
        paid = generation.payment_claimed_at is not None
        unknown = generation.error_code == _OUTCOME_UNKNOWN or (paid and not generation.is_finished)
        if generation.status == GenerationStatus.SUCCEEDED:
            fee = generation.expected_fee_wei
            fee = _estimated_fee_wei() if fee is None else fee
            _settle(
                account=account,
                generation_id=generation.pk,
                fee_wei=fee,
                reason=f"image {generation.pk}: fee {fee} wei (settled by the stale-hold sweep)",
            )
            return replace(base, action="settled", detail="succeeded")
        if generation.is_finished and not paid:
            _release(account=account, hold=hold, reason="ended before paying; hold released")
            return replace(base, action="released", detail="unpaid")
        if generation.is_finished and generation.expected_fee_wei is not None and not unknown:
            fee = generation.expected_fee_wei
            _settle(
                account=account,
                generation_id=generation.pk,
                fee_wei=fee,
                reason=f"image {generation.pk}: paid fee {fee} wei (settled by the sweep)",
            )
            return replace(base, action="settled", detail="paid")
        if now - hold.created_at >= timeout:
            _release(
                account=account,
                hold=hold,
                reason="outcome unknown and no metered usage before the timeout; released",
            )
            return replace(base, action="timed_out", detail="unknown")
        return None


def holds_resolve_stale(*, now: datetime | None = None) -> list[StaleHold]:
    """Resolve open holds older than ``BILLING_STALE_HOLD_AFTER_SECONDS``; report each.

    A hold whose generation succeeded is settled at its expected fee; one whose generation
    ended without paying (or was deleted) is released; one whose outcome is unknown waits
    for the usage mirror until ``BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS``, then is released.
    Each resolution is logged at WARNING (a hook did not run, or the outcome stayed unknown).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.BILLING_STALE_HOLD_AFTER_SECONDS)
    limit = settings.BILLING_STALE_HOLD_SWEEP_LIMIT
    # Least recently looked-at first (never looked at before anything), then oldest: a
    # run is bounded, and holds it leaves open go behind the ones it did not reach, so
    # a crowd of unresolvable holds cannot starve a settleable one.
    ids = list(
        Hold.objects.filter(status=HoldStatus.OPEN, created_at__lt=cutoff)
        .order_by(F("swept_at").asc(nulls_first=True), "created_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    report = []
    left_open = []
    for hold_id in ids:
        resolved = _resolve_one(hold_id=hold_id, now=now)
        if resolved is None:
            left_open.append(hold_id)
            continue
        logger.warning(
            "billing: stale hold %s wei for image %s of user %s %s (%s)",
            resolved.amount_wei,
            resolved.generation_id,
            resolved.user_id,
            resolved.action,
            resolved.detail,
        )
        report.append(resolved)
    for start in range(0, len(left_open), 500):
        Hold.objects.filter(pk__in=left_open[start : start + 500], status=HoldStatus.OPEN).update(
            swept_at=now
        )
    return report
