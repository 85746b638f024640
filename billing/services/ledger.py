"""The one place ledger entries are written and account totals change.

``ledger_entry_append`` runs under the account's row lock (the caller holds it),
computes the new totals in Python with ``int`` (exact on both databases), writes the
entry with those totals, and saves the account, all in the caller's transaction.
An idempotency key already used returns the entry written the first time; the same
key with a different account, kind or amount is a conflict, never a second entry.
"""

from __future__ import annotations

import logging
import uuid

from django.db import IntegrityError, transaction

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
)
from billing.money import MAX_UINT256, format_eth

logger = logging.getLogger(__name__)


def _check_amount(amount_wei: int) -> None:
    if isinstance(amount_wei, bool) or not isinstance(amount_wei, int):
        raise TypeError("amount_wei must be an int")
    if not 0 <= amount_wei <= MAX_UINT256:
        raise ValueError("amount_wei must be between 0 and 2**256 - 1")


def ledger_entry_append(
    *,
    account: Account,
    kind: str,
    effect: str,
    amount_wei: int,
    reason: str,
    idempotency_key: str,
    acting_user: User | None = None,
    generation_id: uuid.UUID | str | None = None,
    usage_ref: str = "",
    corrects: LedgerEntry | None = None,
) -> LedgerEntry:
    """Append one entry to a **locked** ``account`` and update its totals; idempotent.

    Raises ``InsufficientFundsError`` when a debit or hold would take the available
    balance (balance − held) below zero, and ``ValueError`` when a release exceeds
    what is held or a credit would pass 2**256 − 1. Nothing is written then.
    """
    _check_amount(amount_wei)
    if effect not in KIND_EFFECTS[kind]:
        raise ValueError(f"a {kind} entry cannot have effect {effect}")
    if not reason.strip():
        raise ValueError("a ledger entry needs a reason")
    existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        if (existing.account_id, existing.kind, existing.effect, existing.amount_wei) != (
            account.pk,
            kind,
            effect,
            amount_wei,
        ):
            raise IdempotencyConflictError(
                "This operation key was already used for a different entry."
            )
        return existing

    balance, held = account.balance_wei, account.held_wei
    if effect == EntryEffect.CREDIT:
        balance += amount_wei
    elif effect == EntryEffect.DEBIT:
        balance -= amount_wei
    elif effect == EntryEffect.HOLD:
        held += amount_wei
    elif effect == EntryEffect.RELEASE:
        held -= amount_wei
    if held < 0:
        raise ValueError("cannot release more than is held")
    if balance > MAX_UINT256 or held > MAX_UINT256:
        raise AmountOutOfRangeError("The balance would exceed 2**256 - 1 wei.")
    if balance < held:
        raise InsufficientFundsError(
            f"Not enough available credit: {format_eth(account.available_wei)} available, "
            f"{format_eth(amount_wei)} needed."
        )
    entry = LedgerEntry(
        account=account,
        kind=kind,
        effect=effect,
        amount_wei=amount_wei,
        balance_after_wei=balance,
        held_after_wei=held,
        reason=reason.strip()[:500],
        actor=acting_user,
        idempotency_key=idempotency_key,
        generation_id=generation_id,
        usage_ref=usage_ref,
        corrects=corrects,
    )
    entry.full_clean(exclude=["generation"])
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError as exc:
        # Only a concurrent writer of the same key on another account can get here
        # (the account lock serialises this one): report it, never write twice.
        raise IdempotencyConflictError("This operation key was already used.") from exc
    if (balance, held) != (account.balance_wei, account.held_wei):
        account.balance_wei, account.held_wei = balance, held
        account.save(update_fields=["balance_wei", "held_wei", "updated_at"])
    return entry


def _refused_before(*, idempotency_key: str) -> LedgerRejection | None:
    return LedgerRejection.objects.filter(idempotency_key=idempotency_key).first()


def _record_rejection(
    *, account: Account, kind: str, amount_wei: int, reason: str, idempotency_key: str
) -> None:
    LedgerRejection.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={"account": account, "kind": kind, "amount_wei": amount_wei, "reason": reason},
    )


@transaction.atomic
def credit_grant(
    *,
    user: User,
    amount_wei: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """Add prepaid credit (staff top-up, demo seed). Same key twice = one grant."""
    account = account_lock(user_id=user.pk)
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.GRANT,
        effect=EntryEffect.CREDIT,
        amount_wei=amount_wei,
        reason=reason,
        idempotency_key=f"grant:{idempotency_key}",
        acting_user=acting_user,
    )
    logger.info(
        "billing: grant %s wei to user %s by %s (entry %s)",
        amount_wei,
        user.pk,
        acting_user.pk if acting_user else "system",
        entry.pk,
    )
    return entry


def _debit_or_refuse(
    *,
    user: User,
    kind: str,
    amount_wei: int,
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
                    amount_wei=amount_wei,
                    reason=reason,
                    idempotency_key=idempotency_key,
                    acting_user=acting_user,
                    corrects=corrects,
                )
        except InsufficientFundsError as exc:
            _record_rejection(
                account=account,
                kind=kind,
                amount_wei=amount_wei,
                reason=reason,
                idempotency_key=idempotency_key,
            )
            rejected = exc
    raise rejected


def credit_deduct(
    *,
    user: User,
    amount_wei: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """Take credit away (staff). Refused, and remembered as refused, beyond the available."""
    entry = _debit_or_refuse(
        user=user,
        kind=EntryKind.DEDUCT,
        amount_wei=amount_wei,
        reason=reason,
        acting_user=acting_user,
        idempotency_key=f"deduct:{idempotency_key}",
    )
    logger.info(
        "billing: deduct %s wei from user %s by %s (entry %s)",
        amount_wei,
        user.pk,
        acting_user.pk if acting_user else "system",
        entry.pk,
    )
    return entry


def ledger_correct(
    *,
    entry: LedgerEntry,
    credit: bool,
    amount_wei: int,
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
            amount_wei=amount_wei,
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
            amount_wei=amount_wei,
            reason=reason,
            idempotency_key=key,
            acting_user=acting_user,
            corrects=entry,
        )
