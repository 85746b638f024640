"""Promotional credit: granted by staff (or the demo seed), spent first, may expire.

A ``promotion`` ledger entry credits the balance and opens a lot (``PromotionalCredit``)
with what it granted. Everything else on the balance is purchased credit. Debits spend
the lots first (``billing.services.ledger.promotions_spend``, in the debit's own
transaction), so ``Σ open lots' remaining ≤ balance``.

**Expiry.** When a lot's ``expires_at`` has passed, whichever comes first — the beat
task (``billing.tasks.promotions_expire_task``) or the admission of the owner's next
image — writes one ``promotion_expiry`` debit (key ``promotion_expiry:<lot id>``: exactly
once per lot) and closes the lot. **Holds count against promotional credit first**, in
the order lots are spent: the account's ``held_micros`` is laid over the open lots
earliest expiry first, and the expiry takes only the part of the lot no hold covers,
``remaining − min(remaining, held not covered by earlier lots)``. That part is never more
than the available balance, so an expiry never takes credit an image in progress holds;
what those images held of the lot is not taken back (it pays for them, or, if they are
released, stays on the balance as ordinary credit).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing.lock_objects import account_lock
from billing.models import Account, EntryEffect, EntryKind, LedgerEntry, PromotionalCredit
from billing.money import format_usd
from billing.services.ledger import ledger_entry_append, promotion_spend_order

logger = logging.getLogger(__name__)

#: Lots one beat run expires at most (the next run takes the rest).
EXPIRE_BATCH = 500


@transaction.atomic
def promotion_grant(
    *,
    user: User,
    amount_micros: int,
    reason: str,
    acting_user: User | None,
    idempotency_key: str,
    expires_at: datetime | None = None,
) -> LedgerEntry:
    """Grant promotional credit, optionally expiring at ``expires_at`` (in the future).
    Same key twice = one grant (and one lot)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("promotional credit must expire in the future")
    account = account_lock(user_id=user.pk)
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.PROMOTION,
        effect=EntryEffect.CREDIT,
        amount_micros=amount_micros,
        reason=reason,
        idempotency_key=f"promotion:{idempotency_key}",
        acting_user=acting_user,
    )
    PromotionalCredit.objects.get_or_create(
        entry=entry,
        defaults={
            "account": account,
            "amount_micros": amount_micros,
            "remaining_micros": amount_micros,
            "expires_at": expires_at,
        },
    )
    logger.info(
        "billing: promotional credit %s µUSD to user %s by %s, expires %s (entry %s)",
        amount_micros,
        user.pk,
        acting_user.pk if acting_user else "system",
        expires_at.isoformat() if expires_at else "never",
        entry.pk,
    )
    return entry


def promotion_free_micros(*, account: Account, lot: PromotionalCredit) -> int:
    """What of ``lot`` no hold of the **locked** account covers: the account's holds are
    counted against its open lots first, in the order lots are spent."""
    held = account.held_micros
    lots = PromotionalCredit.objects.filter(account=account, closed_at__isnull=True).order_by(
        *promotion_spend_order()
    )
    for other in lots:
        covered = min(other.remaining_micros, held)
        if other.pk == lot.pk:
            return other.remaining_micros - covered
        held -= covered
    return 0  # closed meanwhile


def _promotion_expire(*, account: Account, lot: PromotionalCredit) -> LedgerEntry:
    """Take back the unheld rest of an expired, open ``lot`` of the **locked** account
    and close the lot."""
    taken = min(promotion_free_micros(account=account, lot=lot), account.available_micros)
    kept = lot.remaining_micros - taken
    reason = f"Promotional credit expired: {format_usd(taken)} of {format_usd(lot.amount_micros)}"
    if kept:
        reason += f" ({format_usd(kept)} held by images in progress is not taken back)"
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.PROMOTION_EXPIRY,
        effect=EntryEffect.DEBIT,
        amount_micros=taken,
        reason=reason,
        idempotency_key=f"promotion_expiry:{lot.pk}",
    )
    lot.remaining_micros = 0
    lot.closed_at = timezone.now()
    lot.expiry_entry = entry
    lot.save(update_fields=["remaining_micros", "closed_at", "expiry_entry"])
    logger.info(
        "billing: promotional lot %s of user %s expired: %s µUSD taken back, %s held kept",
        lot.pk,
        account.pk,
        taken,
        kept,
    )
    return entry


def promotions_expire_for_account(*, account: Account, now: datetime) -> list[LedgerEntry]:
    """Expire the **locked** account's lots whose time has passed (admission calls this
    before it decides)."""
    due = PromotionalCredit.objects.filter(
        account=account, closed_at__isnull=True, expires_at__lte=now
    ).order_by(*promotion_spend_order())
    return [_promotion_expire(account=account, lot=lot) for lot in due]


def promotions_expire_due(*, now: datetime, limit: int = EXPIRE_BATCH) -> int:
    """Expire up to ``limit`` lots whose time has passed, one account transaction each;
    returns how many it expired. A lot the admission path expired meanwhile is skipped."""
    due = list(
        PromotionalCredit.objects.filter(closed_at__isnull=True, expires_at__lte=now)
        .order_by("expires_at", "pk")
        .values_list("pk", "account_id")[:limit]
    )
    expired = 0
    for lot_id, account_id in due:
        with transaction.atomic():
            account = account_lock(user_id=account_id)
            lot = PromotionalCredit.objects.filter(pk=lot_id, closed_at__isnull=True).first()
            if lot is None:
                continue
            _promotion_expire(account=account, lot=lot)
            expired += 1
    return expired
