"""The Plans page: a user sees every plan in dollars and changes their own.

A change that costs nothing now (between plans without a fee, a downgrade or a cancel
at the period end) is made here; one that costs money is handed to the card payment
step (``billing:plan_pay``), which fulfils it once the payment succeeds.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from accounts.models import User
from billing.models import Plan
from billing.selectors import plan_display, plan_offers
from billing.services import account_open
from billing.services.subscriptions import (
    PlanChangeError,
    cancel_target,
    plan_change_free,
    plan_change_quote,
    plan_change_undo,
    subscription_active,
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
        },
    )


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


@login_required
@require_safe
def plan_pay(request: HttpRequest, slug: str) -> HttpResponse:
    """The change that costs money, stated in dollars before the card is charged."""
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
    return render(request, "billing/plan_pay.html", {"account": account, "quote": quote})
