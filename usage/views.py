"""``/staff/billing/``: the usage mirror for staff (per-user table, chart, CSV, sync, drift)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from usage.selectors import STAFF_BILLING_PERMISSION, parse_sort, staff_dashboard, usage_csv_rows


def _staff_billing_required(view: Callable[..., HttpResponseBase]) -> Callable[..., Any]:
    """Staff *and* the usage permission: the page shows every user's e-mail and spend."""
    return staff_member_required(
        permission_required(STAFF_BILLING_PERMISSION, raise_exception=True)(view)
    )


@_staff_billing_required
@require_GET
def staff_billing(request: HttpRequest) -> HttpResponse:
    context = staff_dashboard(
        search=request.GET.get("q", ""),
        sort=request.GET.get("sort"),
        page=request.GET.get("page"),
        csv_url=reverse("staff_billing:csv"),
    )
    return render(request, "usage/staff_billing.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@_staff_billing_required
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
