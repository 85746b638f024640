"""``/staff/billing/``: the usage mirror for staff (per-user table, chart, CSV, sync, drift)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from billing.charts import ChartPoint, bar_chart_svg
from billing.money import format_eth, format_usd_micros
from usage.models import UsageSyncStatus
from usage.selectors import (
    SORTS,
    drift_recent,
    flagged_manifests,
    parse_sort,
    sync_runs_recent,
    usage_csv_rows,
    usage_days,
    usage_page,
    usage_sync_state_get,
    usage_totals,
)

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


def _when(moment: datetime | None) -> str:
    """UTC, to the second; pre-formatted so a 50-row page does not localize 300 values."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isascii() and value.isdigit() and int(value) > 0 else 1


@staff_member_required
@require_GET
def staff_billing(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "")[:200]
    sort = parse_sort(request.GET.get("sort"))
    size = settings.BILLING_STAFF_PAGE_SIZE
    state = usage_sync_state_get()
    totals = usage_totals(search=search, state=state)
    pages = max(1, -(-totals.users // size))
    page = min(_page_number(request.GET.get("page")), pages)
    rows = usage_page(search=search, sort=sort, page=page, size=size)
    days = usage_days(days=30)
    chart = bar_chart_svg(
        [ChartPoint(label=day.day.strftime("%m-%d"), value=day.fee_wei or 0) for day in days],
        title="Metered network cost per day (last 30 days, ETH)",
        value_label=format_eth,
    )

    def link(**changes: Any) -> str:
        params = {"q": search, "sort": sort, "page": page, **changes}
        return "?" + urlencode({key: value for key, value in params.items() if value})

    columns = [
        {
            "key": key,
            "label": label,
            "url": link(sort=key if sort != key else f"-{key}", page=None),
            "active": "▲" if sort == key else "▼" if sort == f"-{key}" else "",
        }
        for key, label in (
            ("user", "User"),
            ("email", "Email"),
            ("requests", "Requests"),
            ("eth", "Total (ETH)"),
            ("usd", "Total (USD)"),
            ("last_used", "Last used"),
        )
        if key in SORTS
    ]
    drift = drift_recent(limit=20)
    context = {
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
        "columns": columns,
        "search": search,
        "page": page,
        "pages": pages,
        "prev_url": link(page=page - 1) if page > 1 else "",
        "next_url": link(page=page + 1) if page < pages else "",
        "csv_url": reverse("staff_billing:csv") + link(page=None),
        "chart": chart,
        "drift": [
            {
                "external_user_id": item.external_user_id,
                "day": item.day.isoformat(),
                "local": format_eth(item.local_debit_wei or 0),
                "metered": format_eth(item.metered_fee_wei or 0),
                "margin": format_eth(item.margin_wei),
                "alert": item.alert,
            }
            for item in drift
        ],
        "drift_alert_wei": settings.BILLING_DRIFT_ALERT_WEI,
        "flagged": flagged_manifests(limit=20),
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
    return render(request, "usage/staff_billing.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@staff_member_required
@require_GET
def staff_billing_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every (filtered) user, streamed; amounts as plain integer digits."""
    writer = csv.writer(_Echo())
    rows = usage_csv_rows(
        search=request.GET.get("q", "")[:200], sort=parse_sort(request.GET.get("sort"))
    )

    def lines() -> Iterator[str]:
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="pymthouse-usage-by-user.csv"'
    return response
