"""Reads of the billing app (views and admin build their context from these)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.charts import ChartPoint
from billing.db import WeiSum
from billing.models import Account, EntryEffect, EntryKind, LedgerEntry, PlanType
from billing.services.admission import generations_counted_this_month
from integrations.pymthouse.money import parse_wei


@dataclass(frozen=True)
class LedgerTotals:
    balance_wei: int
    held_wei: int


def account_ledger_totals(*, account: Account) -> LedgerTotals:
    """Balance and held recomputed from the entries (exact sums); equals the account row."""
    sums = LedgerEntry.objects.filter(account=account).aggregate(
        credit=WeiSum("amount_wei", filter=Q(effect=EntryEffect.CREDIT)),
        debit=WeiSum("amount_wei", filter=Q(effect=EntryEffect.DEBIT)),
        hold=WeiSum("amount_wei", filter=Q(effect=EntryEffect.HOLD)),
        release=WeiSum("amount_wei", filter=Q(effect=EntryEffect.RELEASE)),
    )
    value = {key: sums[key] or 0 for key in sums}
    return LedgerTotals(
        balance_wei=value["credit"] - value["debit"], held_wei=value["hold"] - value["release"]
    )


def account_entries(*, account: Account) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(account=account).select_related("actor").order_by("-id")


@dataclass(frozen=True)
class Allowance:
    limit: int | None
    used: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


def account_allowance(*, account: Account) -> Allowance | None:
    """This month's image count against the plan's allowance or cap (counted plans)."""
    plan = account.plan
    if plan.plan_type == PlanType.USAGE:
        return None
    limit = (
        plan.monthly_generation_allowance
        if plan.plan_type == PlanType.FREE
        else plan.monthly_generation_cap
    )
    return Allowance(limit=limit, used=generations_counted_this_month(owner_id=account.pk))


def low_balance_threshold(*, account: Account) -> int | None:
    """The lowest configured threshold the available balance is at or below, if any."""
    if account.plan.plan_type != PlanType.USAGE:
        return None
    thresholds = sorted(parse_wei(t) for t in settings.BILLING_LOW_BALANCE_THRESHOLDS_WEI)
    crossed = [t for t in thresholds if account.available_wei <= t]
    return crossed[0] if crossed else None


def account_daily_usage(
    *, account: Account, days: int = 30, today: date | None = None
) -> list[ChartPoint]:
    """Usage debits per UTC day for the last ``days`` days, zero-filled, exact."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    since = datetime(start.year, start.month, start.day, tzinfo=timezone.get_current_timezone())
    rows = (
        LedgerEntry.objects.filter(
            account=account, kind=EntryKind.USAGE_DEBIT, created_at__gte=since
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=WeiSum("amount_wei"))
        .order_by()
    )
    by_day = {row["day"]: row["total"] or 0 for row in rows}
    return [
        ChartPoint(
            label=(start + timedelta(days=i)).strftime("%m-%d"),
            value=by_day.get(start + timedelta(days=i), 0),
        )
        for i in range(days)
    ]


def account_recent_charges(*, account: Account, limit: int = 20) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(account=account, kind=EntryKind.USAGE_DEBIT).order_by("-id")[
        :limit
    ]


def generation_charge(*, generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The usage debit of one image, if it was charged."""
    return LedgerEntry.objects.filter(
        generation_id=generation_id, kind=EntryKind.USAGE_DEBIT
    ).first()
