"""The places the usage mirror touches the ledger.

- ``local_usage_debits``: per (externalUserId, UTC day), the network fee in wei our
  ledger's usage charges account for (``usage_debit.network_fee_wei``; users pay in USD
  micros, the network in wei, and drift compares wei with wei), and the exact USD micros
  those charges converted it to (each entry's wei × its ``eth_usd_rate``, before the plan
  multiplier), for the drift report: one grouped query, exact on both databases
  (``billing.db.WeiSum``, grouped by rate so the conversion is exact in Python).
- ``expected_charge_days``: the (externalUserId, UTC day) pairs on which a charge was
  expected (an image admitted with a hold): only there is a metered fee above our debits
  a drift *alert*; elsewhere it is the operator's cost (plans that include images).
- ``settle_from_usage``: a newly mirrored manifest row joined to a generation calls
  ``billing.services.generation_usage_settle``, which charges a generation whose outcome
  was unknown (its hold kept) and does nothing for one already charged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from django.db.models.functions import TruncDate

from billing.db import WeiSum
from billing.models import EntryKind, Hold, LedgerEntry
from billing.money import wei_to_usd_micros_exact
from billing.services import generation_usage_settle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalDebits:
    """One (user, day) of usage debits: the network fee they recorded (wei) and its
    exact USD micros at each debit's own rate (not rounded; the drift rounds once)."""

    wei: int = 0
    usd_micros_exact: Fraction = Fraction(0)


def _usd_exact(wei: int, rate_text: str) -> Fraction:
    if not wei:
        return Fraction(0)
    try:
        rate = Fraction(rate_text)
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is None:
        # Every usage debit records its rate (billing.services.holds); one without is
        # counted in wei only, and said so.
        logger.error("usage debit with %s wei has no usable ETH/USD rate (%r)", wei, rate_text)
        return Fraction(0)
    return wei_to_usd_micros_exact(wei, rate)


def local_usage_debits(
    *, user_ids: dict[str, int] | None, since: date, changed_since: datetime | None = None
) -> dict[tuple[str, date], LocalDebits]:
    """``{(externalUserId, day): LocalDebits}``: usage debits on days from ``since``.

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
    # Grouped by rate text as well: a day's debits share few rates, and the wei sum of
    # each group times its exact rate is the exact USD of the group.
    grouped = (
        entries.annotate(day=TruncDate("created_at"))
        .values_list("account__user__external_user_id", "day", "eth_usd_rate")
        .annotate(total=WeiSum("network_fee_wei"))
        .order_by()
    )
    wei: dict[tuple[str, date], int] = {}
    usd: dict[tuple[str, date], Fraction] = {}
    for ext, day, rate_text, total in grouped:
        key = (ext, day)
        if touched is not None and key not in touched:
            continue
        amount = int(total or 0)
        wei[key] = wei.get(key, 0) + amount
        usd[key] = usd.get(key, Fraction(0)) + _usd_exact(amount, rate_text)
    return {key: LocalDebits(wei=wei[key], usd_micros_exact=usd[key]) for key in wei}


def expected_charge_days(
    *, external_user_ids: Collection[str], since: date, until: date
) -> set[tuple[str, date]]:
    """The (externalUserId, UTC day) pairs, days in ``[since, until]``, on which the user
    had an image admitted with a hold (``billing.Hold``, by ``created_at``): a charge was
    expected. One grouped query on the holds' ``created_at`` index."""
    if not external_user_ids:
        return set()
    holds = Hold.objects.filter(
        account__user__external_user_id__in=list(external_user_ids),
        created_at__gte=datetime.combine(since, datetime.min.time(), tzinfo=UTC),
        created_at__lt=datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
    )
    return set(
        holds.annotate(day=TruncDate("created_at"))
        .values_list("account__user__external_user_id", "day")
        .distinct()
        .order_by()
    )


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
