"""Holds and charges for images: admit, settle, release.

Billing is handed what it needs (owner, generation id, model, the images counted this
month, the payment record); it reads no generation row. The callers are
``inference.services`` (admission, payment time, an end without payment, the
stale-hold sweep in ``inference.services.reconcile``) and the usage mirror
(``usage.services.ledger``).

* ``generation_admit`` runs in the admission transaction, after the generation row is
  inserted. Counted plans check their limit; charging plans place a hold of the most the
  image may cost. A refusal raises ``CreditRefusedError`` and the whole transaction
  (row, task, upstream call) is gone.
* ``generation_charge_settle`` runs at payment time: the hold becomes a usage debit of
  the real fee × the plan's multiplier (or the plan's flat price). On the ai-gateway
  backend no fee is known and the configured estimate is the charge.
* ``generation_hold_release`` gives the hold back when nothing was paid.
* ``generation_charge_refund`` credits back the charge of a paid image the network did
  not deliver (``BILLING_CHARGE_UNDELIVERED`` off); the usage debit stays for staff.
* An unknown outcome keeps its hold until ``generation_usage_settle`` (the usage mirror
  found its manifest) or the stale-hold sweep (timeout: ``hold_release``, reported).

Every movement carries a key derived from the generation id, so each hook may run any
number of times and moves money once. All run under the account row lock.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from django.db import transaction
from django.utils import timezone

from billing.errors import CreditRefusedError
from billing.lock_objects import account_lock
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    RateSource,
)
from billing.money import format_usd
from billing.plan_policy import plan_policy
from billing.rates import Rate, rate_from_metering, rate_now, rate_text
from billing.services.ledger import account_totals_save, ledger_entry_append
from billing.services.payments import auto_topup_enqueue
from billing.services.pricing import estimated_fee_wei, max_fee_estimate, price_observe
from billing.services.promotions import promotions_expire_for_account
from integrations.livepeer.types import PaymentRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """What admission decided: the most the image's payment may cost at the network (the
    signer's ``maxPrice`` is derived from it; the hold covers it), on a plan that charges
    per image; ``None`` on a plan that includes images."""

    max_fee_wei: int | None


def generation_admit(
    *,
    owner_id: int,
    generation_id: uuid.UUID,
    model_id: str,
    images_this_month: int | Callable[[], int],
    description: str = "",
) -> Admitted:
    """Admit a generation (inserted in this transaction, before or after) or raise
    ``CreditRefusedError``.

    ``images_this_month`` counts the images of this month that count against a limit,
    this one included (a callable is called only by a plan that counts images);
    ``description`` names the image in words (prompt excerpt, model) for the ledger. A
    charging plan holds its charge for the most the image may cost at the network,
    converted at the current rate: that hold is the most the image will ever cost the
    user. Runs inside the caller's transaction; holds the account row lock until it ends.
    """
    account = account_lock(user_id=owner_id)
    # Promotional credit past its expiry is taken back before deciding (the beat task
    # may not have run yet); a refusal rolls it back with the rest, for the beat to redo.
    promotions_expire_for_account(account=account, now=timezone.now())
    plan = account.plan
    if account.suspended:
        raise CreditRefusedError(
            "Your account is suspended. Contact support to generate images again.",
            code="account_suspended",
        )
    policy = plan_policy(plan)
    if callable(images_this_month):
        images_this_month = images_this_month() if policy.counts_images else 0
    refusal = policy.refusal(
        account=account, plan=plan, images_this_month=images_this_month, now=timezone.now()
    )
    if refusal is not None:
        raise refusal
    if not policy.charges:
        # No hold, so no ceiling: the operator pays the runner's price (up to the
        # client's maxPrice markup) for images its plans include.
        return Admitted(max_fee_wei=None)
    max_fee = max_fee_estimate(model_id=model_id)
    rate = rate_now()
    amount = policy.charge(plan, fee_wei=max_fee, usd_per_eth=rate.usd_per_eth)
    if amount > account.available_micros:
        raise CreditRefusedError(
            f"You're out of credit: this image costs up to {format_usd(amount)} and you "
            f"have {format_usd(account.available_micros, round_down=True)} available. "
            "Add credit to keep generating.",
            code="insufficient_credit",
        )
    description = description[:200] or "an image"
    Hold.objects.create(
        generation_id=generation_id,
        account=account,
        plan=plan,
        amount_micros=amount,
        max_fee_wei=max_fee,
        eth_usd_rate=rate.text,
        description=description,
    )
    ledger_entry_append(
        account=account,
        kind=EntryKind.HOLD,
        effect=EntryEffect.HOLD,
        amount_micros=amount,
        reason=f"Held while generating {description}",
        idempotency_key=f"hold:{generation_id}",
        generation_id=generation_id,
        new_key=True,  # the hold row was inserted just above: it has no entry yet
    )
    return Admitted(max_fee_wei=max_fee)


@dataclass(frozen=True)
class _Settled:
    charged_micros: int
    absorbed_micros: int


def _settle(
    *,
    account: Account,
    generation_id: uuid.UUID,
    fee_wei: int,
    rate: Rate,
    how: str,
    usage_ref: str = "",
) -> _Settled | None:
    """Turn the generation's hold into a usage debit of its plan's charge for ``fee_wei``
    at ``rate``, never more than the hold. ``None`` when there is nothing to charge: it
    was charged already, or no hold was placed (the image was admitted on a plan that
    does not charge per image, whatever the account's plan is now)."""
    key = f"usage_debit:{generation_id}"
    hold = Hold.objects.filter(generation_id=generation_id).select_related("plan").first()
    if hold is None:
        return None
    # An open hold (read under the account lock) has no usage debit, refund or release
    # yet: each of those closes it in the transaction that writes it.
    is_open = hold.status == HoldStatus.OPEN
    if not is_open:
        if LedgerEntry.objects.filter(idempotency_key=key).exists():
            return None
        if LedgerEntry.objects.filter(idempotency_key=f"refund:{generation_id}").exists():
            return None  # refunded as undelivered (generation_charge_refund): never charged
    if is_open:
        ledger_entry_append(
            account=account,
            kind=EntryKind.HOLD_RELEASE,
            effect=EntryEffect.RELEASE,
            amount_micros=hold.amount_micros,
            reason=f"Hold ended: {hold.description or 'an image'}",
            idempotency_key=f"hold_release:{generation_id}",
            generation_id=generation_id,
            usage_ref=usage_ref,
            new_key=True,
            save_account=False,  # saved once, with the debit below
        )
    plan = hold.plan or account.plan  # the plan that admitted the image
    charge = plan_policy(plan).charge(plan, fee_wei=fee_wei, usd_per_eth=rate.usd_per_eth)
    billed = min(charge, hold.amount_micros)  # the hold is the ceiling
    collectable = min(billed, account.available_micros)
    absorbed = charge - collectable
    if absorbed:
        # Beyond the hold (the network asked more than admission allowed for), or the
        # hold had timed out and the credit is gone: the operator bears it, recorded.
        logger.warning(
            "billing: image %s charge %s µUSD above what is collectable (%s µUSD); "
            "%s µUSD absorbed",
            generation_id,
            charge,
            collectable,
            absorbed,
        )
    ledger_entry_append(
        account=account,
        kind=EntryKind.USAGE_DEBIT,
        effect=EntryEffect.DEBIT,
        amount_micros=collectable,
        reason=f"Image: {hold.description or 'an image'}",
        idempotency_key=key,
        generation_id=generation_id,
        usage_ref=usage_ref,
        network_fee_wei=fee_wei,
        eth_usd_rate=rate.text,
        rate_source=rate.source,
        rate_at=rate.at,
        new_key=is_open,
        save_account=False,
    )
    account_totals_save(account=account)
    hold.status = HoldStatus.SETTLED
    hold.charged_micros = collectable
    hold.absorbed_micros = absorbed
    hold.resolution = how[:200]
    hold.resolved_at = timezone.now()
    hold.save(
        update_fields=["status", "charged_micros", "absorbed_micros", "resolution", "resolved_at"]
    )
    auto_topup_enqueue(account=account)  # below its threshold: a task after commit
    return _Settled(charged_micros=collectable, absorbed_micros=absorbed)


@transaction.atomic(savepoint=False)
def generation_charge_settle(
    *, owner_id: int, generation_id: uuid.UUID, model_id: str, record: PaymentRecord
) -> None:
    """Charge the generation's confirmed payment: right after the paid call, in the
    transaction that records how it ended (no savepoint of its own: its failure fails
    that transaction).

    ``record.expected_fee_wei`` is the runner's real fee; ``None`` (ai-gateway backend,
    where pymthouse does not charge the user) charges ``BILLING_ESTIMATED_FEE_WEI``.
    The fee is converted at the current rate; the charge never exceeds the hold. The
    runner's price is remembered for the next holds (unless it jumped: ``price_observe``).
    Idempotent: a second call changes nothing.
    """
    account = account_lock(user_id=owner_id)
    if record.expected_fee_wei is None:
        fee, source = estimated_fee_wei(), "estimated fee (gateway backend)"
    else:
        fee, source = record.expected_fee_wei, "runner fee"
    _settle(
        account=account,
        generation_id=generation_id,
        fee_wei=fee,
        rate=rate_now(),
        how=f"charged at payment: {source} {fee} wei",
    )
    if record.price_wei is not None and record.units_paid:
        price_observe(
            model_id=model_id, price_wei=record.price_wei, units_per_payment=record.units_paid
        )


@transaction.atomic
def generation_usage_settle(
    *,
    owner_id: int,
    generation_id: uuid.UUID | str,
    fee_wei: int,
    usage_ref: str,
    usd_micros_exact: Fraction | None = None,
) -> bool:
    """Charge a generation from the usage mirror's metered fee (outcome was unknown).

    ``usd_micros_exact`` is pymthouse's own exact USD figure for that manifest: the fee
    is then converted at the rate it implies (source ``metered``), else at the current
    rate. Does nothing when the generation was already charged or held nothing (returns
    False). Never more than the hold, even if the hold had already timed out.
    """
    account = account_lock(user_id=owner_id)
    rate = rate_now()
    if usd_micros_exact is not None:
        implied = rate_from_metering(fee_wei=fee_wei, usd_micros_exact=usd_micros_exact)
        if implied is not None:
            text = rate_text(implied)
            rate = Rate(
                usd_per_eth=Fraction(text),
                text=text,
                source=RateSource.METERED,
                at=timezone.now(),
            )
    settled = _settle(
        account=account,
        generation_id=uuid.UUID(str(generation_id)),
        fee_wei=fee_wei,
        rate=rate,
        how=f"charged from metering: {fee_wei} wei",
        usage_ref=usage_ref,
    )
    return settled is not None


def _release(*, account: Account, hold: Hold, reason: str) -> None:
    ledger_entry_append(
        account=account,
        kind=EntryKind.HOLD_RELEASE,
        effect=EntryEffect.RELEASE,
        amount_micros=hold.amount_micros,
        reason=f"Released, not charged: {hold.description or 'an image'}",
        idempotency_key=f"hold_release:{hold.generation_id}",
        generation_id=hold.generation_id,
    )
    hold.status = HoldStatus.RELEASED
    hold.resolution = reason[:200]
    hold.resolved_at = timezone.now()
    hold.save(update_fields=["status", "resolution", "resolved_at"])


def _open_hold_locked(generation_id: uuid.UUID | str) -> tuple[Account, Hold] | None:
    """The generation's open hold and its account, locked; ``None`` if none is open."""
    hold = Hold.objects.filter(generation_id=generation_id).first()
    if hold is None or hold.status != HoldStatus.OPEN:
        return None
    account = account_lock(user_id=hold.account_id)
    hold = Hold.objects.get(pk=hold.pk)  # re-read under the lock
    if hold.status != HoldStatus.OPEN:
        return None
    return account, hold


@transaction.atomic
def generation_hold_release(*, generation_id: uuid.UUID | str, reason: str) -> None:
    """Give back the hold of a generation that ended without paying; idempotent."""
    found = _open_hold_locked(generation_id)
    if found is not None:
        account, hold = found
        _release(account=account, hold=hold, reason=reason)


# --- the stale-hold sweep's hooks (inference.services.reconcile decides) -------------


@transaction.atomic
def hold_release(*, generation_id: uuid.UUID, reason: str) -> bool:
    """Release the open hold of ``generation_id`` with ``reason`` as written; False if
    it was no longer open."""
    found = _open_hold_locked(generation_id)
    if found is None:
        return False
    account, hold = found
    _release(account=account, hold=hold, reason=reason)
    return True


@transaction.atomic
def hold_settle(*, generation_id: uuid.UUID, fee_wei: int, reason: str) -> bool:
    """Charge the open hold of ``generation_id`` for a network fee of ``fee_wei``; False
    if it was no longer open."""
    found = _open_hold_locked(generation_id)
    if found is None:
        return False
    account, _ = found
    _settle(
        account=account, generation_id=generation_id, fee_wei=fee_wei, rate=rate_now(), how=reason
    )
    return True


def holds_mark_swept(*, hold_ids: list[int], now: datetime) -> None:
    """Record that the sweep looked at these holds and left them open (they go behind
    the ones it did not reach next time)."""
    for start in range(0, len(hold_ids), 500):
        Hold.objects.filter(pk__in=hold_ids[start : start + 500], status=HoldStatus.OPEN).update(
            swept_at=now
        )


# --- refunds (issue 13: no charge for an image the user did not get) ------------------


@transaction.atomic
def generation_charge_refund(*, owner_id: int, generation_id: uuid.UUID | str, reason: str) -> None:
    """Credit back the charge of a paid image the network did not deliver; idempotent.

    Called by ``inference.services`` when a generation with a payment claim ends failed
    with a known non-delivery (anything but ``outcome_unknown``) and
    ``BILLING_CHARGE_UNDELIVERED`` is off. The usage debit stays (staff see what the
    network cost); a ``refund`` entry (key ``refund:<id>``) credits exactly its amount.
    With no debit yet and the hold open, the hold is released and a zero refund is
    recorded, which keeps any later settlement (the usage mirror) from charging it.
    An image that never took a hold (a plan that does not charge) writes nothing.
    """
    generation_id = uuid.UUID(str(generation_id))
    key = f"refund:{generation_id}"
    account = account_lock(user_id=owner_id)
    if LedgerEntry.objects.filter(idempotency_key=key).exists():
        return
    debit = LedgerEntry.objects.filter(idempotency_key=f"usage_debit:{generation_id}").first()
    hold = Hold.objects.filter(generation_id=generation_id).first()
    if debit is None and hold is None:
        return  # nothing charged, nothing held, and nothing ever will be (see _settle)
    if debit is None and hold is not None and hold.status == HoldStatus.OPEN:
        _release(account=account, hold=hold, reason=f"image {generation_id}: {reason}")
    amount = debit.amount_micros if debit is not None else 0
    ledger_entry_append(
        account=account,
        kind=EntryKind.REFUND,
        effect=EntryEffect.CREDIT,
        amount_micros=amount,
        reason=f"Refund, not delivered ({reason}): {hold.description if hold else 'an image'}",
        idempotency_key=key,
        generation_id=generation_id,
    )
