"""The one place ledger entries are written and account totals change.

``ledger_entry_append`` runs under the account's row lock (the caller holds it),
computes the new totals in Python with ``int`` (exact on both databases), writes the
entry with those totals, and saves the account, all in the caller's transaction.
An idempotency key already used returns the entry written the first time; the same
key with a different account, kind or amount is a conflict, never a second entry.

Two rules ride on that one write path, in the same locked transaction:

* **Promotional credit first.** A debit takes what it can from the account's open
  promotional lots (``PromotionalCredit``) before purchased credit, earliest expiry first
  (no expiry last, then oldest), so ``Σ open lots' remaining ≤ balance`` always holds.
  A ``promotion_expiry`` debit belongs to its own lot and is not spread.
* **Low balance.** Each change of the available balance is checked against the
  thresholds (``billing.services.low_balance``): a downward crossing is recorded on the
  account row and mailed after commit, once per crossing.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, OrderBy
from django.utils import timezone

from accounts.models import User
from billing.errors import (
    AmountOutOfRangeError,
    IdempotencyConflictError,
    InsufficientFundsError,
)
from billing.lock_objects import account_lock
from billing.models import (
    KIND_EFFECTS,
    Account,
    EntryEffect,
    EntryKind,
    LedgerEntry,
    LedgerRejection,
    PromotionalCredit,
)
from billing.money import MAX_UINT256, format_usd
from billing.services.low_balance import low_balance_track

logger = logging.getLogger(__name__)


def _check_amount(amount_micros: int) -> None:
    if isinstance(amount_micros, bool) or not isinstance(amount_micros, int):
        raise TypeError("amount_micros must be an int")
    if not 0 <= amount_micros <= MAX_UINT256:
        raise ValueError("amount_micros must be between 0 and 2**256 - 1")


def ledger_entry_append(
    *,
    account: Account,
    kind: str,
    effect: str,
    amount_micros: int,
    reason: str,
    idempotency_key: str,
    acting_user: User | None = None,
    generation_id: uuid.UUID | str | None = None,
    usage_ref: str = "",
    corrects: LedgerEntry | None = None,
    network_fee_wei: int | None = None,
    eth_usd_rate: str = "",
    rate_source: str = "",
    rate_at: datetime | None = None,
    new_key: bool = False,
    save_account: bool = True,
) -> LedgerEntry:
    """Append one entry to a **locked** ``account`` and update its totals; idempotent.

    ``new_key=True`` says the caller knows no entry can carry ``idempotency_key`` yet
    (it derives from a row the caller inserted, or found open, under this lock): the
    lookup is skipped, and the unique constraint still refuses a second entry (the
    caller's transaction then fails). ``save_account=False`` leaves the new totals on
    ``account`` for the caller to save with ``account_totals_save`` (one UPDATE for
    several entries in one transaction).

    Raises ``InsufficientFundsError`` when a debit or hold would take the available
    balance (balance − held) below zero, and ``ValueError`` when a release exceeds
    what is held or a credit would pass 2**256 − 1. Nothing is written then.
    """
    _check_amount(amount_micros)
    if effect not in KIND_EFFECTS[kind]:
        raise ValueError(f"a {kind} entry cannot have effect {effect}")
    if not reason.strip():
        raise ValueError("a ledger entry needs a reason")
    existing = (
        None if new_key else LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
    )
    if existing is not None:
        if (existing.account_id, existing.kind, existing.effect, existing.amount_micros) != (
            account.pk,
            kind,
            effect,
            amount_micros,
        ):
            raise IdempotencyConflictError(
                "This operation key was already used for a different entry."
            )
        return existing

    balance, held = account.balance_micros, account.held_micros
    if effect == EntryEffect.CREDIT:
        balance += amount_micros
    elif effect == EntryEffect.DEBIT:
        balance -= amount_micros
    elif effect == EntryEffect.HOLD:
        held += amount_micros
    elif effect == EntryEffect.RELEASE:
        held -= amount_micros
    if held < 0:
        raise ValueError("cannot release more than is held")
    if balance > MAX_UINT256 or held > MAX_UINT256:
        raise AmountOutOfRangeError("That amount is too large for the account.")
    if balance < held:
        raise InsufficientFundsError(
            "Not enough available credit: "
            f"{format_usd(account.available_micros, round_down=True)} available, "
            f"{format_usd(amount_micros)} needed."
        )
    entry = LedgerEntry(
        account=account,
        kind=kind,
        effect=effect,
        amount_micros=amount_micros,
        balance_after_micros=balance,
        held_after_micros=held,
        reason=reason.strip()[:500],
        actor=acting_user,
        idempotency_key=idempotency_key,
        generation_id=generation_id,
        usage_ref=usage_ref,
        corrects=corrects,
        network_fee_wei=network_fee_wei,
        eth_usd_rate=eth_usd_rate,
        rate_source=rate_source,
        rate_at=rate_at,
    )
    # Field checks only (lengths, choices, ranges: no queries). The foreign keys are
    # the caller's locked rows, and the database enforces the unique key and the checks.
    entry.clean_fields(exclude=["account", "actor", "generation", "corrects"])
    try:
        if new_key:
            entry.save(force_insert=True)
        else:
            with transaction.atomic():
                entry.save(force_insert=True)
    except IntegrityError as exc:
        # Only a concurrent writer of the same key on another account can get here
        # (the account lock serialises this one): report it, never write twice.
        raise IdempotencyConflictError("This operation key was already used.") from exc
    if effect == EntryEffect.DEBIT and kind == EntryKind.PAYMENT_REVERSAL and amount_micros:
        # A refunded or disputed card payment takes back purchased credit: promotional
        # lots give only what keeps Σ open lots ≤ balance.
        lots = PromotionalCredit.objects.filter(account=account, closed_at__isnull=True)
        excess = sum(lot.remaining_micros for lot in lots) - balance
        if excess > 0:
            promotions_spend(account=account, amount_micros=excess)
    elif effect == EntryEffect.DEBIT and kind != EntryKind.PROMOTION_EXPIRY and amount_micros:
        promotions_spend(account=account, amount_micros=amount_micros)
    changed = low_balance_track(
        account=account,
        available_before=account.available_micros,
        available_after=balance - held,
        effect=effect,
        entry_id=entry.pk,
    )
    dirty = (balance, held) != (account.balance_micros, account.held_micros) or changed
    account.balance_micros, account.held_micros = balance, held
    if dirty and save_account:
        account_totals_save(account=account)
    return entry


def account_totals_save(*, account: Account) -> None:
    """Save the **locked** account's totals and low-balance state (what
    ``ledger_entry_append`` changed in memory; one UPDATE)."""
    account.save(
        update_fields=[
            "balance_micros",
            "held_micros",
            "low_balance_notified_micros",
            "low_balance_notified_at",
            "updated_at",
        ]
    )


def promotion_spend_order() -> tuple[OrderBy | str, ...]:
    """The order promotional lots are spent (and holds are counted against them): the
    earliest expiry first, lots without expiry last, then the oldest."""
    return (F("expires_at").asc(nulls_last=True), "created_at", "pk")


def promotions_spend(*, account: Account, amount_micros: int) -> int:
    """Take up to ``amount_micros`` from the **locked** account's open promotional lots,
    in ``promotion_spend_order``; returns how much came from them (the rest is purchased
    credit). A lot spent to zero closes."""
    left = amount_micros
    lots = PromotionalCredit.objects.filter(account=account, closed_at__isnull=True).order_by(
        *promotion_spend_order()
    )
    for lot in lots:
        if left == 0:
            break
        taken = min(lot.remaining_micros, left)
        left -= taken
        lot.remaining_micros -= taken
        update = ["remaining_micros"]
        if lot.remaining_micros == 0:
            lot.closed_at = timezone.now()
            update.append("closed_at")
        lot.save(update_fields=update)
    return amount_micros - left


def _refused_before(*, idempotency_key: str) -> LedgerRejection | None:
    return LedgerRejection.objects.filter(idempotency_key=idempotency_key).first()


def _record_rejection(
    *, account: Account, kind: str, amount_micros: int, reason: str, idempotency_key: str
) -> None:
    LedgerRejection.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={
            "account": account,
            "kind": kind,
            "amount_micros": amount_micros,
            "reason": reason,
        },
    )


@transaction.atomic
def credit_grant(
    *,
    user: User,
    amount_micros: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """Add credit that counts as purchased (spent after promotional credit, never
    expires): what staff grants were before promotional credit. Staff now grant
    ``promotion_grant``; this stays for credit paid for outside the product (the
    benchmarks' setup). Same key twice = one grant."""
    account = account_lock(user_id=user.pk)
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.GRANT,
        effect=EntryEffect.CREDIT,
        amount_micros=amount_micros,
        reason=reason,
        idempotency_key=f"grant:{idempotency_key}",
        acting_user=acting_user,
    )
    logger.info(
        "billing: grant %s µUSD to user %s by %s (entry %s)",
        amount_micros,
        user.pk,
        acting_user.pk if acting_user else "system",
        entry.pk,
    )
    return entry


def _debit_or_refuse(
    *,
    user: User,
    kind: str,
    amount_micros: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
    corrects: LedgerEntry | None = None,
) -> LedgerEntry:
    """A staff debit; a refusal is remembered so the same key stays refused."""
    rejected: InsufficientFundsError | None = None
    with transaction.atomic():
        account = account_lock(user_id=user.pk)
        if _refused_before(idempotency_key=idempotency_key) is not None:
            raise InsufficientFundsError(
                "This operation was refused earlier for lack of funds; start a new one."
            )
        try:
            with transaction.atomic():
                return ledger_entry_append(
                    account=account,
                    kind=kind,
                    effect=EntryEffect.DEBIT,
                    amount_micros=amount_micros,
                    reason=reason,
                    idempotency_key=idempotency_key,
                    acting_user=acting_user,
                    corrects=corrects,
                )
        except InsufficientFundsError as exc:
            _record_rejection(
                account=account,
                kind=kind,
                amount_micros=amount_micros,
                reason=reason,
                idempotency_key=idempotency_key,
            )
            rejected = exc
    raise rejected


def credit_deduct(
    *,
    user: User,
    amount_micros: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """Take credit away (staff). Refused, and remembered as refused, beyond the available."""
    entry = _debit_or_refuse(
        user=user,
        kind=EntryKind.DEDUCT,
        amount_micros=amount_micros,
        reason=reason,
        acting_user=acting_user,
        idempotency_key=f"deduct:{idempotency_key}",
    )
    logger.info(
        "billing: deduct %s µUSD from user %s by %s (entry %s)",
        amount_micros,
        user.pk,
        acting_user.pk if acting_user else "system",
        entry.pk,
    )
    return entry


def ledger_correct(
    *,
    entry: LedgerEntry,
    credit: bool,
    amount_micros: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """Correct ``entry`` with a new compensating entry (credit or debit); never an edit."""
    user = entry.account.user
    key = f"correction:{idempotency_key}"
    if not credit:
        return _debit_or_refuse(
            user=user,
            kind=EntryKind.CORRECTION,
            amount_micros=amount_micros,
            reason=reason,
            acting_user=acting_user,
            idempotency_key=key,
            corrects=entry,
        )
    with transaction.atomic():
        account = account_lock(user_id=user.pk)
        return ledger_entry_append(
            account=account,
            kind=EntryKind.CORRECTION,
            effect=EntryEffect.CREDIT,
            amount_micros=amount_micros,
            reason=reason,
            idempotency_key=key,
            acting_user=acting_user,
            corrects=entry,
        )
