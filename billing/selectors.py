"""Reads of the billing app (views and admin build their context from these)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.charts import ChartPoint
from billing.db import WeiSum
from billing.hooks import images_this_month
from billing.models import Account, EntryEffect, EntryKind, Hold, HoldStatus, LedgerEntry
from billing.plan_policy import plan_policy
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
    policy = plan_policy(plan)
    if not policy.counts_images:
        return None
    return Allowance(limit=policy.monthly_limit(plan), used=images_this_month(owner_id=account.pk))


@dataclass(frozen=True)
class PlanDisplay:
    """What the pages show of an account's plan (templates never compare plan types)."""

    name: str
    #: Prepaid credit: show balance, held and available.
    shows_credit: bool
    #: A monthly allowance or cap: show the count.
    shows_allowance: bool
    #: A subscription period: show whether it is active.
    shows_subscription: bool


def plan_display(*, account: Account) -> PlanDisplay:
    policy = plan_policy(account.plan)
    return PlanDisplay(
        name=account.plan.name,
        shows_credit=policy.charges,
        shows_allowance=policy.counts_images,
        shows_subscription=policy.has_subscription,
    )


def low_balance_threshold(*, account: Account) -> int | None:
    """The lowest configured threshold the available balance is at or below, if any."""
    if not plan_policy(account.plan).charges:
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


def generation_refund(*, generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The refund of one image the network did not deliver, if it was refunded."""
    return LedgerEntry.objects.filter(generation_id=generation_id, kind=EntryKind.REFUND).first()


@dataclass(frozen=True)
class OpenHold:
    """An open hold, as the stale-hold sweep sees it."""

    hold_id: int
    generation_id: uuid.UUID
    user_id: int
    amount_wei: int
    created_at: datetime


def holds_open_stale(*, before: datetime, limit: int) -> list[OpenHold]:
    """Open holds placed before ``before``, at most ``limit``: least recently looked at by
    the sweep first (never looked at before anything), then oldest. A run is bounded, and
    the holds it leaves open go behind the ones it did not reach, so a crowd of
    unresolvable holds cannot starve a settleable one."""
    rows = (
        Hold.objects.filter(status=HoldStatus.OPEN, created_at__lt=before)
        .order_by(F("swept_at").asc(nulls_first=True), "created_at", "pk")
        .values_list("pk", "generation_id", "account_id", "amount_wei", "created_at")[:limit]
    )
    return [OpenHold(*row) for row in rows]
