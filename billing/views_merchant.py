"""Merchant-mode billing pages (``BILLING_MODE=merchant``): credit, plans, invoices and
cards through pymthouse checkout (docs/billing.md "Merchant mode").

Every purchase leaves the site for pymthouse's checkout (``checkoutUrl``) and comes
back to a page here; pymthouse never calls us, so the return page polls the wallet
until the credit shows (bounded by ``BILLING_TOPUP_CONFIRM_SECONDS``, then "still
processing"). Refusals are shown with ``messages`` (``MerchantBillingError``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from accounts.models import User
from billing.forms import TopUpForm
from billing.money import format_usd
from billing.services import account_open
from billing.services.merchant import (
    MerchantBillingError,
    card_setup_start,
    merchant_cards,
    merchant_invoice_link,
    merchant_invoices,
    merchant_plans,
    merchant_subscription,
    plan_cancel,
    plan_change,
    plan_resume,
    top_up_cancel,
    top_up_progress,
    top_up_start,
)
from billing.services.wallet import wallet_refresh


def merchant_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """These pages exist only in merchant mode (owner_rollup: 404)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if settings.BILLING_MODE != "merchant":
            raise Http404("Not available in this billing mode.")
        return view(request, *args, **kwargs)

    return wrapped


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


def _absolute(request: HttpRequest, name: str, *args: Any) -> str:
    return request.build_absolute_uri(reverse(name, args=args))


def _balance_context(user: User) -> dict[str, Any]:
    account = account_open(user_id=user.pk)
    return {"account": account, "wallet": getattr(account, "merchant_wallet", None)}


@login_required
@merchant_only
def credit_add(request: HttpRequest) -> HttpResponse:
    """GET: the balance and the amounts; POST: start a checkout and leave for it."""
    user = _user(request)
    if request.method == "POST":
        form = TopUpForm(request.POST)
        if form.is_valid():
            try:
                top_up = top_up_start(
                    user=user,
                    amount_micros=form.cleaned_data["amount_micros"],
                    click_key=form.cleaned_data["idempotency_key"],
                    return_url=lambda pk: _absolute(request, "billing:credit_return", pk),
                    cancel_url=lambda pk: _absolute(request, "billing:credit_cancelled", pk),
                )
            except MerchantBillingError as exc:
                messages.error(request, exc.message)
                return redirect("billing:credit_add")
            return redirect(top_up.checkout_url)
        status = 400
    else:
        wallet_refresh(user=user)
        form = TopUpForm()
        status = 200
    context = {
        "form": form,
        "presets": settings.BILLING_TOPUP_PRESETS_USD,
        **_balance_context(user),
    }
    return render(request, "billing/merchant/credit_add.html", context, status=status)


def _progress_or_404(request: HttpRequest, top_up_id: uuid.UUID) -> Any:
    progress = top_up_progress(user=_user(request), top_up_id=top_up_id)
    if progress is None:
        raise Http404("No such purchase.")
    return progress


@login_required
@merchant_only
@require_safe
def credit_return(request: HttpRequest, top_up_id: uuid.UUID) -> HttpResponse:
    """Where pymthouse's checkout sends the user after paying. Never buys anything."""
    progress = _progress_or_404(request, top_up_id)
    context = {
        "progress": progress,
        "status_url": reverse("billing:credit_status", args=[top_up_id]),
        "poll_seconds": settings.BILLING_TOPUP_CONFIRM_SECONDS,
        **_balance_context(_user(request)),
    }
    return render(request, "billing/merchant/credit_return.html", context)


@login_required
@merchant_only
@require_safe
def credit_status(request: HttpRequest, top_up_id: uuid.UUID) -> JsonResponse:
    """The return page's poll: re-reads the wallet, says where the top-up is."""
    progress = _progress_or_404(request, top_up_id)
    account = account_open(user_id=_user(request).pk)
    response = JsonResponse(
        {
            "state": progress.state,
            "amount": format_usd(progress.top_up.amount_micros),
            "available": format_usd(account.available_micros, round_down=True),
            "available_micros": str(account.available_micros),
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@merchant_only
@require_safe
def credit_cancelled(request: HttpRequest, top_up_id: uuid.UUID) -> HttpResponse:
    top_up = top_up_cancel(user=_user(request), top_up_id=top_up_id)
    if top_up is None:
        raise Http404("No such purchase.")
    return render(
        request,
        "billing/merchant/credit_cancelled.html",
        {"top_up": top_up, **_balance_context(_user(request))},
    )


# --- plans ----------------------------------------------------------------------------


@login_required
@merchant_only
@require_safe
def plans(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    context: dict[str, Any] = {"plans": [], "subscription": None}
    try:
        context["plans"] = merchant_plans(user=user)
        context["subscription"] = merchant_subscription(user=user)
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
    return render(request, "billing/merchant/plans.html", context)


def _plan_change_and_go(request: HttpRequest, plan_id: str, *, returning: bool) -> HttpResponse:
    user = _user(request)
    success = request.build_absolute_uri(
        reverse("billing:merchant_plan_return") + "?" + urlencode({"plan": plan_id})
    )
    try:
        result = plan_change(
            user=user,
            plan_id=plan_id,
            success_url=success,
            cancel_url=_absolute(request, "billing:plans"),
        )
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
        return redirect("billing:plans")
    if result.checkout_url and result.plan_id != plan_id:
        if returning:
            # Back from the card checkout, but pymthouse has not seen the card yet
            # (its webhook may lag): never send the user round again by ourselves.
            messages.info(
                request, "Your card is still being saved. Choose the plan again in a moment."
            )
            return redirect("billing:plans")
        # No card saved: a setup-mode checkout first; back on plan_return we ask again.
        return redirect(result.checkout_url)
    if result.pending_plan is not None:
        messages.success(request, "Your plan changes at the end of the billing period.")
    else:
        messages.success(request, "Your plan has changed.")
    return redirect("billing:plans")


@login_required
@merchant_only
@require_POST
def plan_change_view(request: HttpRequest) -> HttpResponse:
    plan_id = request.POST.get("plan", "")
    if not plan_id:
        messages.error(request, "Choose a plan.")
        return redirect("billing:plans")
    return _plan_change_and_go(request, plan_id, returning=False)


@login_required
@merchant_only
@require_safe
def plan_return(request: HttpRequest) -> HttpResponse:
    """Back from a setup-mode checkout (a card was saved): ask for the plan again
    (pymthouse never applies it by itself)."""
    plan_id = request.GET.get("plan", "")
    if not plan_id:
        return redirect("billing:plans")
    return _plan_change_and_go(request, plan_id, returning=True)


@login_required
@merchant_only
@require_POST
def plan_cancel_view(request: HttpRequest) -> HttpResponse:
    try:
        result = plan_cancel(user=_user(request))
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
    else:
        when = result.effective_at.strftime("%b %-d, %Y") if result.effective_at else "soon"
        messages.success(request, f"Your plan is cancelled from {when}.")
    return redirect("billing:plans")


@login_required
@merchant_only
@require_POST
def plan_resume_view(request: HttpRequest) -> HttpResponse:
    try:
        plan_resume(user=_user(request))
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Your plan continues; the cancellation is undone.")
    return redirect("billing:plans")


# --- invoices and cards ---------------------------------------------------------------


@login_required
@merchant_only
@require_safe
def invoices(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"invoices": None}
    try:
        context["invoices"] = merchant_invoices(user=_user(request))
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
    return render(request, "billing/merchant/invoices.html", context)


@login_required
@merchant_only
@require_safe
def invoice_link(request: HttpRequest, invoice_id: str) -> HttpResponse:
    try:
        url = merchant_invoice_link(user=_user(request), invoice_id=invoice_id)
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
        return redirect("billing:invoices")
    if not url:
        messages.error(request, "This invoice has no page to show yet.")
        return redirect("billing:invoices")
    return redirect(url)


@login_required
@merchant_only
def cards(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if request.method == "POST":
        try:
            url = card_setup_start(
                user=user,
                success_url=_absolute(request, "billing:cards"),
                cancel_url=_absolute(request, "billing:cards"),
            )
        except MerchantBillingError as exc:
            messages.error(request, exc.message)
            return redirect("billing:cards")
        return redirect(url)
    context: dict[str, Any] = {"cards": ()}
    try:
        context["cards"] = merchant_cards(user=user)
    except MerchantBillingError as exc:
        messages.error(request, exc.message)
    return render(request, "billing/merchant/cards.html", context)
