"""The two places the usage mirror touches the ledger.

- ``local_usage_debits``: per (externalUserId, UTC day), the network fee in wei our
  ledger's usage charges account for (``usage_debit.network_fee_wei``; users pay in USD
  micros, the network in wei, and drift compares wei with wei), for the drift report:
  one grouped query, exact on both databases (``billing.db.WeiSum``).
- ``settle_from_usage``: a newly mirrored manifest row joined to a generation calls
  ``billing.services.generation_usage_settle``, which charges a generation whose outcome
  was unknown (its hold kept) and does nothing for one already charged.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from fractions import Fraction

from django.db.models.functions import TruncDate

from billing.db import WeiSum
from billing.models import EntryKind, LedgerEntry
from billing.services import generation_usage_settle


def local_usage_debits(
    *, user_ids: dict[str, int] | None, since: date, changed_since: datetime | None = None
) -> dict[tuple[str, date], int]:
    """``{(externalUserId, day): wei}``: network fees of usage debits on days from ``since``.

    With ``changed_since``, only the (user, day) pairs that gained a debit at or after that
    moment are returned (with their whole day's total), so a run with nothing new costs
    one indexed range query however large the ledger is.
    """
    # A plain range on created_at (indexed), not created_at__date (a function of the column).
    entries = LedgerEntry.objects.filter(
        kind=EntryKind.USAGE_DEBIT,
        created_at__gte=datetime.combine(since, datetime.min.time(), tzinfo=UTC),
    )
    if user_ids is not None:
        if not user_ids:
            return {}
        entries = entries.filter(account__user_id__in=list(user_ids.values()))
    touched: set[tuple[str, date]] | None = None
    if changed_since is not None:
        touched = set(
            entries.filter(created_at__gte=changed_since)
            .annotate(day=TruncDate("created_at"))
            .values_list("account__user__external_user_id", "day")
            .distinct()
            .order_by()
        )
        if not touched:
            return {}
        entries = entries.filter(account__user__external_user_id__in={ext for ext, _ in touched})
    grouped = (
        entries.annotate(day=TruncDate("created_at"))
        .values_list("account__user__external_user_id", "day")
        .annotate(total=WeiSum("network_fee_wei"))
        .order_by()
    )
    totals = {(ext, day): int(total or 0) for ext, day, total in grouped}
    if touched is not None:
        return {key: value for key, value in totals.items() if key in touched}
    return totals


def settle_from_usage(
    *,
    user_id: int,
    generation_id: object,
    fee_wei: int,
    usage_ref: str,
    usd_micros_exact: Fraction | None = None,
) -> bool:
    """Charge an ``outcome_unknown`` generation of ``user_id`` its metered fee (converted
    at the rate pymthouse metered it at, when its exact USD figure is known); False if
    nothing to do."""
    return generation_usage_settle(
        owner_id=user_id,
        generation_id=str(generation_id),
        fee_wei=fee_wei,
        usage_ref=usage_ref,
        usd_micros_exact=usd_micros_exact,
    )
