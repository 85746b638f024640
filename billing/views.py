"""The end user's billing pages: the dashboard and the CSV export of their own ledger."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from accounts.models import User
from billing import credit_views, views_merchant, views_plans
from billing.charts import bar_chart_svg
from billing.exports import csv_text
from billing.models import LedgerEntry, Payment
from billing.modes import payments_enabled
from billing.money import format_usd, usd_decimal
from billing.selectors import (
    account_activity,
    account_allowance,
    account_credit_split,
    account_daily_images,
    account_daily_usage,
    account_entries,
    entries_display,
    entry_display,
    image_quote,
    low_balance_notice,
    plan_display,
    receipt_entry,
)
from billing.services import account_open, renewal_failure
from billing.services.payments import RENEWAL_DECLINED

ACTIVITY_PAGE_SIZE = 25

CSV_COLUMNS = (
    "entry_id",
    "created_at",
    "kind",
    "effect",
    "amount_usd",
    "balance_after_usd",
    "held_after_usd",
    "amount_micros",
    "balance_after_micros",
    "held_after_micros",
    "network_fee_wei",
    "eth_usd_rate",
    "rate_source",
    "generation_id",
    "reason",
    "credit_type",
    "promotion_expires_at",
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
    images = account_daily_images(account=account)
    page = Paginator(account_activity(account=account), ACTIVITY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context: dict[str, Any] = {
        "account": account,
        "plan": account.plan,
        "shown": plan_display(account=account),
        "allowance": account_allowance(account=account),
        "low_balance": low_balance_notice(account=account),
        "credit": account_credit_split(account=account),
        "usage_chart": bar_chart_svg(
            usage, title="Charges per day, last 30 days", value_label=format_usd
        ),
        "usage_total": sum(point.value for point in usage),
        "images_chart": bar_chart_svg(images, title="Images per day, last 30 days"),
        "images_total": sum(point.value for point in images),
        "quote": image_quote(account=account, model_id=settings.INFERENCE_MODELS[0]),
        "page": page,
        "entries": entries_display(page.object_list),
        "now": timezone.now(),
        "payments_enabled": payments_enabled(),
        **_payment_shown(account_id=account.pk, payment_id=request.GET.get("payment", "")),
        "merchant_mode": settings.BILLING_MODE == "merchant",
        "renewal_failed": renewal_failure(account=account),
        "renewal_declined": RENEWAL_DECLINED,
    }
    return render(request, "billing/dashboard.html", context)


def _payment_shown(*, account_id: int, payment_id: str) -> dict[str, Any]:
    """The payment the user just made (``?payment=<id>``, theirs only) and its receipt."""
    try:
        key = uuid.UUID(payment_id)
    except ValueError:
        return {}
    payment = Payment.objects.filter(pk=key, account_id=account_id).first()
    if payment is None:
        return {}
    entry = None
    if payment.payment_intent_id:
        entry = LedgerEntry.objects.filter(
            idempotency_key=f"purchase:{payment.payment_intent_id}"
        ).first()
    return {"paid": payment, "paid_entry": entry}


@login_required
@require_safe
def receipt(request: HttpRequest, entry_id: int) -> HttpResponse:
    """A printable receipt for one credit to the signed-in user's account."""
    user = _user(request)
    account = account_open(user_id=user.pk)
    entry = receipt_entry(account=account, entry_id=entry_id)
    if entry is None:
        raise Http404("No such receipt.")
    display = entry_display(entry)
    return render(
        request,
        "billing/receipt.html",
        {"entry": entry, "row": display, "user": user, "number": f"PH-{entry.pk:08d}"},
    )


def _csv_rows(entries: Iterator[LedgerEntry]) -> Iterator[list[str]]:
    yield list(CSV_COLUMNS)
    for entry in entries:
        display = entry_display(entry)
        yield [
            str(entry.pk),
            entry.created_at.isoformat(),
            entry.kind,
            entry.effect,
            usd_decimal(entry.amount_micros),  # exact: 0.017164
            usd_decimal(entry.balance_after_micros),
            usd_decimal(entry.held_after_micros),
            str(entry.amount_micros),  # plain digits, never 1E+30
            str(entry.balance_after_micros),
            str(entry.held_after_micros),
            "" if entry.network_fee_wei is None else str(entry.network_fee_wei),
            entry.eth_usd_rate,
            entry.rate_source,
            str(entry.generation_id or ""),
            csv_text(entry.reason),
            display.credit_type,
            display.expires_at.isoformat() if display.expires_at else "",
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


def credit_add(request: HttpRequest) -> HttpResponse:
    """ "Add credit" (``billing:credit_add``), by ``BILLING_MODE``: merchant mode buys
    through pymthouse checkout (``views_merchant``); owner_rollup takes cards through
    the operator's own Stripe account (``credit_views``)."""
    if _merchant_mode():
        return views_merchant.credit_add(request)
    return credit_views.credit_add(request)


def _merchant_mode() -> bool:
    return bool(settings.BILLING_MODE == "merchant")


def plans(request: HttpRequest) -> HttpResponse:
    """Plans: pymthouse's catalogue in merchant mode, the local plans otherwise."""
    if _merchant_mode():
        return views_merchant.plans(request)
    return views_plans.plans(request)


def plan_cancel(request: HttpRequest) -> HttpResponse:
    if _merchant_mode():
        return views_merchant.plan_cancel_view(request)
    return views_plans.plan_cancel(request)


def plan_resume(request: HttpRequest) -> HttpResponse:
    if _merchant_mode():
        return views_merchant.plan_resume_view(request)
    return views_plans.plan_resume(request)


def plan_choose(request: HttpRequest, slug: str) -> HttpResponse:
    """A local plan (owner_rollup); merchant mode sells pymthouse's plans instead."""
    if _merchant_mode():
        raise Http404("Plans are chosen through pymthouse in this billing mode.")
    return views_plans.plan_choose(request, slug)


def plan_pay(request: HttpRequest, slug: str) -> HttpResponse:
    if _merchant_mode():
        raise Http404("Plans are chosen through pymthouse in this billing mode.")
    return views_plans.plan_pay(request, slug)
