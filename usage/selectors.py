"""Reads of the usage mirror for the staff dashboard and its CSV export.

Everything the dashboard shows is precomputed by the sync (per-user aggregates, per-day
totals, drift, the state row's totals), so a page is a handful of indexed queries at any
number of users: no per-row queries, no aggregation over manifest rows or the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Length
from django.utils import timezone

from billing.charts import ChartPoint, bar_chart_svg
from billing.db import WeiSum
from billing.exports import csv_text
from billing.money import format_eth, format_usd_micros
from usage.models import (
    UsageDay,
    UsageDrift,
    UsageManifest,
    UsageQuarantine,
    UsageSyncRun,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)

#: Required (on top of is_staff) by /staff/billing/ and its CSV.
STAFF_BILLING_PERMISSION = "usage.view_staff_billing"

#: Sort keys offered by the staff table: name -> (field, is an exact-integer text column).
SORTS: dict[str, tuple[str, bool]] = {
    "user": ("external_user_id", False),
    "email": ("email", False),
    "requests": ("request_count", False),
    "eth": ("fee_wei", True),
    "usd": ("network_fee_usd_micros", True),
    "last_used": ("last_used_at", False),
}
DEFAULT_SORT = "-usd"


@dataclass(frozen=True)
class UsageTotals:
    users: int
    requests: int
    fee_wei: int
    network_fee_usd_micros: int


def usage_sync_state_get() -> UsageSyncState:
    state = UsageSyncState.objects.filter(pk=UsageSyncState.SINGLETON_ID).first()
    return state or UsageSyncState(pk=UsageSyncState.SINGLETON_ID)


def parse_sort(value: str | None) -> str:
    name = (value or "").lstrip("-")
    return value if value and name in SORTS else DEFAULT_SORT


def _ordering(sort: str) -> list[object]:
    descending = sort.startswith("-")
    field, numeric_text = SORTS[sort.lstrip("-")]
    keys: list[object] = [field]
    if numeric_text and connection.vendor != "postgresql":
        # SQLite stores wei as canonical digit text: shorter is smaller, then by text.
        keys = [Length(field), field]
    ordered: list[object] = []
    for key in keys:
        if isinstance(key, str):
            ordered.append(f"-{key}" if descending else key)
        else:
            ordered.append(key.desc() if descending else key.asc())  # type: ignore[attr-defined]
    if field != "external_user_id":  # unique already: its own index gives stable pages
        ordered.append("-id" if descending else "id")  # stable pages
    return ordered


def usage_users(*, search: str = "", sort: str = DEFAULT_SORT) -> QuerySet[UsageUserAggregate]:
    """The staff table's rows: one table (email is denormalised), one index per sort.

    ``search`` is a case-insensitive *prefix* of the external user id or the email, served
    by the ``varchar_pattern_ops`` indexes on the lower-cased copies (a substring search
    cannot use a b-tree and scanned every row).
    """
    rows = UsageUserAggregate.objects.all()
    prefix = search.strip().lower()
    if prefix:
        rows = rows.filter(Q(search_user__startswith=prefix) | Q(search_email__startswith=prefix))
    return rows.order_by(*_ordering(parse_sort(sort)))  # type: ignore[arg-type]


def usage_page(
    *, search: str = "", sort: str = DEFAULT_SORT, page: int, size: int
) -> list[UsageUserAggregate]:
    """One page of the staff table, 1-based.

    The offset is walked on the ids alone (``SELECT id ... ORDER BY <sort>, id OFFSET n``,
    served by the sort's ``(<sort>, id)`` index without touching the table), then only the
    page's rows are read: a deep page costs an index walk, not n full rows.
    """
    offset = (max(page, 1) - 1) * size
    ids = list(
        usage_users(search=search, sort=sort).values_list("id", flat=True)[offset : offset + size]
    )
    rows = UsageUserAggregate.objects.in_bulk(ids)
    return [rows[pk] for pk in ids if pk in rows]


def usage_totals(*, search: str = "", state: UsageSyncState | None = None) -> UsageTotals:
    """Totals of the (filtered) table: the sync's precomputed ones when unfiltered."""
    if not search.strip():
        state = state or usage_sync_state_get()
        return UsageTotals(
            users=state.user_count,
            requests=state.request_count,
            fee_wei=state.fee_wei or 0,
            network_fee_usd_micros=state.network_fee_usd_micros or 0,
        )
    sums = (
        usage_users(search=search)
        .order_by()
        .aggregate(
            users=Count("id"),
            requests=Sum("request_count"),
            wei=WeiSum("fee_wei"),
            usd=WeiSum("network_fee_usd_micros"),
        )
    )
    return UsageTotals(
        users=sums["users"],
        requests=int(sums["requests"] or 0),
        fee_wei=int(sums["wei"] or 0),
        network_fee_usd_micros=int(sums["usd"] or 0),
    )


def usage_days(*, days: int = 30, today: date | None = None) -> list[UsageDay]:
    """The last ``days`` UTC days, oldest first, with zero days filled in."""
    end = today or timezone.now().date()
    start = end - timedelta(days=days - 1)
    stored = {row.day: row for row in UsageDay.objects.filter(day__gte=start, day__lte=end)}
    return [
        stored.get(start + timedelta(days=offset)) or UsageDay(day=start + timedelta(days=offset))
        for offset in range(days)
    ]


def drift_recent(*, limit: int = 20, alerts_only: bool = False) -> list[UsageDrift]:
    rows = UsageDrift.objects.all()
    if alerts_only:
        rows = rows.filter(alert=True)
    return list(rows.order_by("-day", "external_user_id")[:limit])


def sync_runs_recent(*, limit: int = 10) -> list[UsageSyncRun]:
    return list(UsageSyncRun.objects.order_by("-started_at")[:limit])


def flagged_manifests(*, limit: int = 20) -> list[UsageManifest]:
    return list(
        UsageManifest.objects.filter(flagged=True)
        .prefetch_related("revisions")
        .order_by("-first_seen_at")[:limit]
    )


def usage_csv_rows(*, search: str = "", sort: str = DEFAULT_SORT) -> Iterator[list[str]]:
    """Header, then one row per user: plain digits for every amount (never 1E+30)."""
    yield [
        "external_user_id",
        "email",
        "request_count",
        "fee_wei",
        "network_fee_usd_micros",
        "manifest_count",
        "last_used_at",
    ]
    rows = usage_users(search=search, sort=sort).values_list(
        "external_user_id",
        "email",
        "request_count",
        "fee_wei",
        "network_fee_usd_micros",
        "manifest_count",
        "last_used_at",
    )
    for ext, email, requests, wei, usd, manifests, last_used in rows.iterator(chunk_size=2000):
        yield [
            csv_text(ext),
            csv_text(email or ""),
            str(int(requests)),
            str(int(wei or 0)),
            str(int(usd or 0)),
            str(int(manifests)),
            last_used.isoformat() if last_used else "",
        ]


def quarantined_recent(*, limit: int = 20) -> list[UsageQuarantine]:
    return list(UsageQuarantine.objects.order_by("-last_seen_at", "-id")[:limit])


# --- the staff page ----------------------------------------------------------------------

STATUS_NOTES = {
    UsageSyncStatus.NEVER: "The usage sync has not run yet.",
    UsageSyncStatus.UNCONFIGURED: (
        "pymthouse answers 503: metering (OpenMeter) is not configured there, so there is "
        "no metered usage to mirror. The local ledger keeps charging users as usual."
    ),
    UsageSyncStatus.BAD_CREDENTIALS: (
        "pymthouse answers 404 on the usage routes: the M2M credentials were rejected. "
        "Check PYMTHOUSE_M2M_CLIENT_ID / PYMTHOUSE_M2M_CLIENT_SECRET."
    ),
    UsageSyncStatus.TIMEOUT: "The last usage read timed out; the next run retries.",
    UsageSyncStatus.UNAVAILABLE: "pymthouse was unreachable; the next run retries.",
    UsageSyncStatus.ERROR: "pymthouse answered something unexpected; see the detail below.",
    UsageSyncStatus.PARTIAL: "The last run stopped part-way; the next run completes it.",
}

COLUMNS = (
    ("user", "User"),
    ("email", "Email"),
    ("requests", "Requests"),
    ("eth", "Total (ETH)"),
    ("usd", "Total (USD)"),
    ("last_used", "Last used"),
)


def _when(moment: datetime | None) -> str:
    """UTC, to the second; pre-formatted so a 50-row page does not localize 300 values."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _signed(text: str, value: int) -> str:
    """A difference with its sign always shown: ``+0.001 ETH``, ``-$0.10``, ``0 ETH``."""
    return f"+{text}" if value > 0 else text


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isascii() and value.isdigit() and int(value) > 0 else 1


def staff_dashboard(
    *, search: str, sort: str | None, page: str | None, csv_url: str
) -> dict[str, Any]:
    """Everything ``/staff/billing/`` shows, formatted (exact integers in, text out)."""
    search = search[:200]
    sort = parse_sort(sort)
    size = settings.BILLING_STAFF_PAGE_SIZE
    state = usage_sync_state_get()
    totals = usage_totals(search=search, state=state)
    pages = max(1, -(-totals.users // size))
    number = min(_page_number(page), pages)
    rows = usage_page(search=search, sort=sort, page=number, size=size)
    days = usage_days(days=30)
    chart = bar_chart_svg(
        [ChartPoint(label=day.day.strftime("%m-%d"), value=day.fee_wei or 0) for day in days],
        title="Metered network cost per day (last 30 days, ETH)",
        value_label=format_eth,
    )

    def link(**changes: Any) -> str:
        params = {"q": search, "sort": sort, "page": number, **changes}
        return "?" + urlencode({key: value for key, value in params.items() if value})

    return {
        "state": state,
        "status_note": STATUS_NOTES.get(UsageSyncStatus(state.status), ""),
        "rows": [
            {
                "external_user_id": row.external_user_id,
                "email": row.email,
                "requests": str(row.request_count),
                "eth": format_eth(row.fee_wei or 0),
                "fee_wei": row.fee_wei or 0,
                "usd": format_usd_micros(row.network_fee_usd_micros or 0),
                "last_used_at": _when(row.last_used_at),
            }
            for row in rows
        ],
        "totals": {
            "users": str(totals.users),
            "requests": str(totals.requests),
            "eth": format_eth(totals.fee_wei),
            "usd": format_usd_micros(totals.network_fee_usd_micros),
        },
        "columns": [
            {
                "key": key,
                "label": label,
                "url": link(sort=key if sort != key else f"-{key}", page=None),
                "active": "▲" if sort == key else "▼" if sort == f"-{key}" else "",
            }
            for key, label in COLUMNS
            if key in SORTS
        ],
        "search": search,
        "page": number,
        "pages": pages,
        "prev_url": link(page=number - 1) if number > 1 else "",
        "next_url": link(page=number + 1) if number < pages else "",
        "csv_url": csv_url + link(page=None),
        "chart": chart,
        "drift": [
            {
                "external_user_id": item.external_user_id,
                "day": item.day.isoformat(),
                "local": format_eth(item.local_debit_wei or 0),
                "metered": format_eth(item.metered_fee_wei or 0),
                "margin": format_eth(item.margin_wei),
                "local_usd": format_usd_micros(item.local_usd_micros or 0),
                "metered_usd": format_usd_micros(item.metered_usd_micros or 0),
                "fee_diff": _signed(format_eth(item.fee_diff_wei), item.fee_diff_wei),
                "fee_diff_wei": str(item.fee_diff_wei),
                "rate_diff": _signed(
                    format_usd_micros(item.rate_diff_usd_micros), item.rate_diff_usd_micros
                ),
                "rate_diff_usd_micros": str(item.rate_diff_usd_micros),
                "alert": item.alert,
            }
            for item in drift_recent(limit=20)
        ],
        "drift_alert_wei": settings.BILLING_DRIFT_ALERT_WEI,
        "flagged": flagged_manifests(limit=20),
        "quarantined": [
            {
                "kind": row.get_kind_display(),
                "external_user_id": row.external_user_id,
                "manifest_id": row.manifest_id,
                "reason": row.reason,
                "times_seen": str(row.times_seen),
                "last_seen_at": _when(row.last_seen_at),
                "raw": row.raw,
            }
            for row in quarantined_recent(limit=20)
        ],
        "runs": [
            {
                "started_at": _when(run.started_at),
                "status": run.get_status_display(),
                "numbers": [
                    str(value)
                    for value in (
                        run.users_seen,
                        run.users_changed,
                        run.manifests_new,
                        run.revisions_new,
                        run.duration_ms,
                    )
                ],
            }
            for run in sync_runs_recent(limit=10)
        ],
        "last_finished_at": _when(state.last_finished_at) or "never",
        "last_success_at": _when(state.last_success_at) or "never",
        "watermark": _when(state.watermark) or "none yet",
    }
