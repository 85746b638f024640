"""The end user's billing pages: the dashboard and the CSV export of their own ledger."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from accounts.models import User
from billing.charts import bar_chart_svg
from billing.exports import csv_text
from billing.models import LedgerEntry
from billing.money import format_eth
from billing.selectors import (
    account_allowance,
    account_daily_usage,
    account_entries,
    account_recent_charges,
    low_balance_threshold,
    plan_display,
)
from billing.services import account_open

CSV_COLUMNS = (
    "entry_id",
    "created_at",
    "kind",
    "effect",
    "amount_wei",
    "balance_after_wei",
    "held_after_wei",
    "generation_id",
    "usage_ref",
    "reason",
)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    account = account_open(user_id=user.pk)
    usage = account_daily_usage(account=account)
    context: dict[str, Any] = {
        "account": account,
        "plan": account.plan,
        "shown": plan_display(account=account),
        "allowance": account_allowance(account=account),
        "low_balance": low_balance_threshold(account=account),
        "usage_chart": bar_chart_svg(
            usage, title="Charges per day, last 30 days", value_label=format_eth
        ),
        "usage_total": sum(point.value for point in usage),
        "charges": list(account_recent_charges(account=account)),
        "entries": list(account_entries(account=account)[:20]),
        "now": timezone.now(),
    }
    return render(request, "billing/dashboard.html", context)


def _csv_rows(entries: Iterator[LedgerEntry]) -> Iterator[list[str]]:
    yield list(CSV_COLUMNS)
    for entry in entries:
        yield [
            str(entry.pk),
            entry.created_at.isoformat(),
            entry.kind,
            entry.effect,
            str(entry.amount_wei),  # plain digits, never 1E+30
            str(entry.balance_after_wei),
            str(entry.held_after_wei),
            str(entry.generation_id or ""),
            entry.usage_ref,
            csv_text(entry.reason),
        ]


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
@require_safe
def ledger_csv(request: HttpRequest) -> StreamingHttpResponse:
    user = _user(request)
    account = account_open(user_id=user.pk)
    entries = account_entries(account=account).iterator(chunk_size=2000)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in _csv_rows(entries)), content_type="text/csv"
    )
    response["Content-Disposition"] = 'attachment; filename="pixelhouse-ledger.csv"'
    response["Cache-Control"] = "private, no-store"
    return response
