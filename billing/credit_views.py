"""Buying credit by card (owner_rollup): the "Add credit" page, its 3-D Secure step,
auto top-up settings and Stripe's webhook endpoint.

The page loads Stripe.js from ``STRIPE_JS_URL`` only, under a Content-Security-Policy
that allows that origin (and Stripe's API origin for its calls) and nothing else
external. What reaches the browser is the publishable key and the client secret of the
user's own SetupIntent or PaymentIntent (Stripe's design); never the secret key.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import User
from billing.models import PLAN_PURPOSES, Payment, PaymentStatus, StripeCustomer
from billing.modes import payments_enabled
from billing.money import MoneyParseError, format_usd, parse_usd_amount
from billing.services import (
    PaymentError,
    PaymentsUnavailableError,
    account_open,
    auto_topup_configure,
    card_setup_finish,
    card_setup_start,
    credit_purchase,
    payment_refresh,
    stripe_event_process,
)
from integrations.stripe import (
    StripeSignatureError,
    StripeUnavailableError,
    webhook_event_construct,
)

logger = logging.getLogger(__name__)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _with_stripe_csp(response: HttpResponse) -> HttpResponse:
    """Scripts from this site and the configured Stripe.js origin only."""
    js = _origin(settings.STRIPE_JS_URL)
    api = _origin(settings.STRIPE_API_BASE)
    response["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self' {js}; frame-src {js}; "
        f"connect-src 'self' {js} {api}; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'"
    )
    return response


def _parse_amount(request: HttpRequest) -> int:
    choice = request.POST.get("amount", "")
    if choice == "custom":
        try:
            return parse_usd_amount(
                request.POST.get("custom_amount", ""), maximum=settings.BILLING_CREDIT_MAX_MICROS
            )
        except MoneyParseError as exc:
            raise PaymentError(str(exc), code="invalid_amount") from exc
    presets = {str(value): value for value in settings.BILLING_CREDIT_PRESETS_MICROS}
    if choice not in presets:
        raise PaymentError("Choose an amount.", code="invalid_amount")
    return presets[choice]


def card_context(user: User, *, error: str = "") -> dict[str, Any]:
    """What a page that takes a card payment needs (Add credit, paying for a plan): the
    saved card, or a SetupIntent for the card element (``billing/_card_field.html`` and
    ``static/js/card-payment.js``), and a fresh one-click ``request_key``."""
    enabled = payments_enabled()
    customer = StripeCustomer.objects.filter(account_id=user.pk).first()
    setup_secret = ""
    if enabled and (customer is None or not customer.has_card):
        try:
            setup_secret = card_setup_start(user=user).client_secret
        except PaymentError as exc:
            error = error or exc.message
            enabled = False
    return {
        "enabled": enabled,
        "customer": customer,
        "has_card": customer is not None and customer.has_card,
        "request_key": uuid.uuid4().hex,
        "setup_secret": setup_secret,
        "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
        "stripe_js_url": settings.STRIPE_JS_URL,
        "error": error,
    }


def card_render(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    return _with_stripe_csp(render(request, template, context, status=status))


def _page(
    request: HttpRequest, *, error: str = "", status: int = 200, custom: str = ""
) -> HttpResponse:
    user = _user(request)
    account = account_open(user_id=user.pk)
    cards = card_context(user, error=error)
    customer = cards["customer"]
    low, high = settings.BILLING_CREDIT_MIN_MICROS, settings.BILLING_CREDIT_MAX_MICROS
    context: dict[str, Any] = {
        **cards,
        "account": account,
        "presets": [(str(v), format_usd(v)) for v in settings.BILLING_CREDIT_PRESETS_MICROS],
        "min_text": format_usd(low),
        "max_text": format_usd(high),
        "custom": custom,
        "auto_threshold": format_usd(
            customer.auto_topup_threshold_micros
            if customer and customer.auto_topup_enabled
            else settings.BILLING_AUTO_TOPUP_THRESHOLD_MICROS
        ).removeprefix("$"),
        "auto_amount": format_usd(
            customer.auto_topup_amount_micros
            if customer and customer.auto_topup_enabled
            else settings.BILLING_AUTO_TOPUP_AMOUNT_MICROS
        ).removeprefix("$"),
    }
    return card_render(request, "billing/credit.html", context, status=status)


def after_payment(request: HttpRequest, payment: Payment, client_secret: str) -> HttpResponse:
    """Where a card payment's answer leads: 3-D Secure in the page, or the outcome."""
    if payment.status == PaymentStatus.REQUIRES_ACTION and client_secret:
        response = render(
            request,
            "billing/credit_confirm.html",
            {
                "payment": payment,
                "client_secret": client_secret,
                "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
                "stripe_js_url": settings.STRIPE_JS_URL,
            },
        )
        return _with_stripe_csp(response)
    if payment.purpose in PLAN_PURPOSES:
        return _after_plan_payment(request, payment)
    if payment.status == PaymentStatus.FAILED:
        return _page(request, error=payment.failure_message or "The payment failed.", status=402)
    return HttpResponseRedirect(f"{reverse('billing:dashboard')}?payment={payment.pk}")


def _after_plan_payment(request: HttpRequest, payment: Payment) -> HttpResponse:
    assert payment.plan is not None
    name = payment.plan.name
    if payment.status == PaymentStatus.SUCCEEDED:
        messages.success(
            request, f"Payment received: {format_usd(payment.amount_micros)} for {name}."
        )
        return HttpResponseRedirect(f"{reverse('billing:plans')}?payment={payment.pk}")
    if payment.status == PaymentStatus.FAILED:
        messages.error(
            request,
            f"Your payment of {format_usd(payment.amount_micros)} for {name} failed: "
            f"{payment.failure_message or 'nothing was charged.'}",
        )
        return HttpResponseRedirect(reverse("billing:plan_pay", args=[payment.plan.slug]))
    messages.warning(
        request,
        f"Your payment of {format_usd(payment.amount_micros)} for {name} is "
        f"{payment.get_status_display().lower()}; the plan changes as soon as the payment "
        "provider confirms it. Don't pay again.",
    )
    return HttpResponseRedirect(reverse("billing:plans"))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def credit_add(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request)
    user = _user(request)
    custom = request.POST.get("custom_amount", "")[:20]
    try:
        amount = _parse_amount(request)
        setup_intent_id = request.POST.get("setup_intent", "").strip()
        if setup_intent_id:
            card_setup_finish(user=user, setup_intent_id=setup_intent_id)
        result = credit_purchase(
            user=user,
            amount_micros=amount,
            request_key=request.POST.get("request_key", "")[:64] or uuid.uuid4().hex,
        )
    except PaymentsUnavailableError as exc:
        return _page(request, error=exc.message, status=503, custom=custom)
    except PaymentError as exc:
        return _page(request, error=exc.message, status=402, custom=custom)
    return after_payment(request, result.payment, result.client_secret)


@login_required
@require_POST
def credit_confirmed(request: HttpRequest, payment_id: uuid.UUID) -> HttpResponse:
    """Back from ``confirmCardPayment``: read the outcome from Stripe (never the page's word)."""
    try:
        payment = payment_refresh(user=_user(request), payment_id=payment_id)
    except PaymentError as exc:
        return _page(request, error=exc.message, status=402)
    return after_payment(request, payment, "")


@login_required
@require_POST
def auto_topup(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    enabled = request.POST.get("enabled") == "on"
    try:
        threshold = parse_usd_amount(request.POST.get("threshold", "0") or "0")
        amount = parse_usd_amount(request.POST.get("amount", "0") or "0")
        auto_topup_configure(
            user=user, enabled=enabled, threshold_micros=threshold, amount_micros=amount
        )
    except MoneyParseError as exc:
        return _page(request, error=str(exc), status=400)
    except PaymentError as exc:
        return _page(request, error=exc.message, status=400)
    messages.success(
        request,
        (
            f"Auto top-up is on: {format_usd(amount)} when your credit falls below "
            f"{format_usd(threshold)}."
        )
        if enabled
        else "Auto top-up is off.",
    )
    return HttpResponseRedirect(reverse("billing:credit_add"))


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's events, signature-checked over the raw body.

    400: the signature does not verify (nothing recorded). 503: Stripe could not be asked
    for the objects' state (Stripe retries). 200 otherwise, unknown types included.
    """
    if not payments_enabled() or not settings.STRIPE_WEBHOOK_SECRET:
        return HttpResponse(status=404)
    try:
        event = webhook_event_construct(
            payload=request.body,
            signature=request.headers.get("Stripe-Signature", ""),
            secret=settings.STRIPE_WEBHOOK_SECRET,
        )
    except StripeSignatureError:
        logger.warning("billing: Stripe webhook with a bad signature refused")
        return HttpResponse("bad signature", status=400, content_type="text/plain")
    try:
        outcome = stripe_event_process(event=event)
    except StripeUnavailableError:
        logger.warning("billing: Stripe event %s deferred: Stripe unavailable", event.id)
        return HttpResponse("retry later", status=503, content_type="text/plain")
    logger.info("billing: Stripe event %s (%s): %s", event.id, event.type, outcome)
    return HttpResponse(outcome, content_type="text/plain")
