"""The two places the usage mirror touches the ledger.

- ``local_usage_debits``: per (externalUserId, UTC day), the wei our ledger debited for
  usage (``usage_debit`` entries), for the drift report. Summed in Python: exact on
  both databases.
- ``settle_from_usage``: a newly mirrored manifest row joined to a generation calls
  ``billing.services.generation_usage_settle``, which charges a generation whose outcome
  was unknown (its hold kept) and does nothing for one already charged.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from billing.models import EntryKind, LedgerEntry


def local_usage_debits(
    *, user_ids: dict[str, int] | None, since: date
) -> dict[tuple[str, date], int]:
    """``{(externalUserId, day): wei}`` of usage debits since ``since`` (exact integers)."""
    entries = LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT, created_at__date__gte=since)
    if user_ids is not None:
        if not user_ids:
            return {}
        entries = entries.filter(account__user_id__in=list(user_ids.values()))
    totals: dict[tuple[str, date], int] = defaultdict(int)
    for ext, created_at, amount in entries.values_list(
        "account__user__external_user_id", "created_at", "amount_wei"
    ).iterator(chunk_size=10_000):
        totals[(ext, created_at.date())] += int(amount or 0)
    return dict(totals)


def settle_from_usage(*, generation_id: object, fee_wei: int, usage_ref: str) -> bool:
    """Charge an ``outcome_unknown`` generation its metered fee; False if nothing to do."""
    from billing.services import generation_usage_settle

    return generation_usage_settle(
        generation_id=str(generation_id), fee_wei=fee_wei, usage_ref=usage_ref
    )
