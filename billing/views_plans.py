"""The Plans page: a user sees every plan in dollars and changes their own.

A change that costs nothing now (between plans without a fee, a downgrade or a cancel
at the period end) is made here; one that costs money is handed to the card payment
step (``billing:plan_pay``), which fulfils it once the payment succeeds.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.models import User
from billing.credit_views import after_payment, card_context, card_render
from billing.models import EntryKind, LedgerEntry, Payment, Plan
from billing.selectors import plan_display, plan_offers
from billing.services import account_open, card_setup_finish, renewal_failure
from billing.services.payments import (
    RENEWAL_DECLINED,
    PaymentError,
    PaymentsUnavailableError,
    PlanPriceChangedError,
    subscription_purchase,
)
from billing.services.subscriptions import (
    PlanChangeError,
    PlanChangeQuote,
    cancel_target,
    plan_change_free,
    plan_change_quote,
    plan_change_undo,
    subscription_active,
    subscription_fee_key,
)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


@login_required
@require_safe
def plans(request: HttpRequest) -> HttpResponse:
    account = account_open(user_id=_user(request).pk)
    now = timezone.now()
    return render(
        request,
        "billing/plans.html",
        {
            "account": account,
            "shown": plan_display(account=account),
            "offers": plan_offers(account=account),
            "subscription_active": subscription_active(account, now=now),
            "pending_plan": account.pending_plan,
            "now": now,
            "renewal_failed": renewal_failure(account=account),
            "renewal_declined": RENEWAL_DECLINED,
            "paid_entry": _paid_entry(user=_user(request), payment_id=request.GET.get("payment")),
        },
    )


def _paid_entry(*, user: User, payment_id: str | None) -> LedgerEntry | None:
    """The fee entry (its receipt) of the user's own plan payment ``?payment=<id>``."""
    try:
        key = uuid.UUID(payment_id or "")
    except ValueError:
        return None
    payment = Payment.objects.filter(pk=key, account_id=user.pk).first()
    if payment is None or not payment.payment_intent_id:
        return None
    return LedgerEntry.objects.filter(
        account_id=user.pk,
        kind=EntryKind.SUBSCRIPTION_FEE,
        idempotency_key=subscription_fee_key(payment.payment_intent_id),
    ).first()


@login_required
@require_POST
def plan_choose(request: HttpRequest, slug: str) -> HttpResponse:
    user = _user(request)
    plan = get_object_or_404(Plan, slug=slug)
    account = account_open(user_id=user.pk)
    try:
        quote = plan_change_quote(account=account, plan=plan, now=timezone.now())
        if quote.charge_now_micros:
            return redirect("billing:plan_pay", slug=plan.slug)
        quote = plan_change_free(user=user, plan=plan)
    except PlanChangeError as exc:
        messages.error(request, exc.message)
        return redirect("billing:plans")
    messages.success(request, quote.summary)
    return redirect("billing:plans")


@login_required
@require_POST
def plan_cancel(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    try:
        quote = plan_change_free(user=user, plan=cancel_target())
    except PlanChangeError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, quote.summary)
    return redirect("billing:plans")


@login_required
@require_POST
def plan_resume(request: HttpRequest) -> HttpResponse:
    try:
        plan_change_undo(user=_user(request))
    except PlanChangeError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Your plan continues after this period; nothing changes.")
    return redirect("billing:plans")


def _pay_page(
    request: HttpRequest,
    *,
    quote: PlanChangeQuote,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    user = _user(request)
    context = {
        **card_context(user, error=error),
        "account": account_open(user_id=user.pk),
        "quote": quote,
    }
    return card_render(request, "billing/plan_pay.html", context, status=status)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def plan_pay(request: HttpRequest, slug: str) -> HttpResponse:
    """The change that costs money, stated in dollars, paid by card in one click.

    The POST names the amount the page showed (``quoted_micros``); the service derives
    the quote again and charges only that amount (docs/billing.md "Paying for a plan").
    """
    user = _user(request)
    plan = get_object_or_404(Plan, slug=slug)
    account = account_open(user_id=user.pk)
    try:
        quote = plan_change_quote(account=account, plan=plan, now=timezone.now())
    except PlanChangeError as exc:
        messages.error(request, exc.message)
        return redirect("billing:plans")
    if not quote.charge_now_micros:
        return redirect("billing:plans")
    if request.method != "POST":
        return _pay_page(request, quote=quote)
    try:
        quoted = int(request.POST.get("quoted_micros", ""))
    except ValueError:
        return _pay_page(request, quote=quote, error="Reload the page and pay again.", status=400)
    try:
        setup_intent_id = request.POST.get("setup_intent", "").strip()
        if setup_intent_id:
            card_setup_finish(user=user, setup_intent_id=setup_intent_id)
        result = subscription_purchase(
            user=user,
            plan=plan,
            quoted_micros=quoted,
            request_key=request.POST.get("request_key", "")[:64] or uuid.uuid4().hex,
        )
    except PlanPriceChangedError as exc:
        return _pay_page(request, quote=exc.quote, error=exc.message, status=409)
    except PaymentsUnavailableError as exc:
        return _pay_page(request, quote=quote, error=exc.message, status=503)
    except PaymentError as exc:
        return _pay_page(request, quote=quote, error=exc.message, status=402)
    except PlanChangeError as exc:
        messages.error(request, exc.message)
        return redirect("billing:plans")
    return after_payment(request, result.payment, result.client_secret)
