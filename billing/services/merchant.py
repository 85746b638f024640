"""Merchant mode: the user's purchases through pymthouse (top-up, plans, cards).

Each function is one call to pymthouse's end-user billing routes
(pymthouse/pymthouse@5ee7cfc7 ``src/app/api/v1/apps/[id]/billing/…`` and
``…/users/[externalUserId]/…``; docs/upstream.md) for the user's ``externalUserId``.
A refusal raises ``MerchantBillingError`` carrying what to tell the user and staff
(``billing.merchant_errors``), after one ERROR line for staff; nothing is recorded
locally before pymthouse has accepted, so a refusal leaves nothing half-written.
Money never moves here: a purchase becomes credit only through the wallet mirror
(``billing.services.wallet``), when pymthouse's ``lifetimeGrantedUsdMicros`` grows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from billing.errors import BillingError
from billing.lock_objects import account_lock
from billing.merchant_errors import MerchantRefusal, merchant_refusal, staff_report
from billing.models import MerchantWallet, PendingTopUp, TopUpStatus
from billing.services.wallet import wallet_error_record, wallet_refresh
from integrations.pymthouse import PymthouseError, get_client
from integrations.pymthouse.billing_types import (
    InvoicePage,
    PaymentMethod,
    Plan,
    SubscriptionCancel,
    SubscriptionChange,
    SubscriptionResume,
    UserSubscription,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: pymthouse's top-up limits (``parseTopUpAmountUsd``, src/lib/stripe/topup-checkout.ts).
TOP_UP_MIN_MICROS = 1_000_000
TOP_UP_MAX_MICROS = 10_000_000_000
#: Plans pymthouse lists that no one subscribes to (discovery only).
_HIDDEN_PLAN_TYPES = frozenset({"free"})


class MerchantBillingError(BillingError):
    """pymthouse refused a purchase, or an input was out of its limits."""

    status = 409

    def __init__(self, refusal: MerchantRefusal) -> None:
        super().__init__(refusal.user_message, code=refusal.code)
        self.refusal = refusal


def _call(action: str, user: User, call: Callable[[], T]) -> T:
    try:
        return call()
    except PymthouseError as exc:
        refusal = merchant_refusal(exc, action=action)
        staff_report(refusal, user_id=user.pk)
        wallet_error_record(user_id=user.pk, refusal=refusal)
        raise MerchantBillingError(refusal) from exc


# --- top-up ---------------------------------------------------------------------------


def top_up_start(
    *,
    user: User,
    amount_micros: int,
    click_key: str,
    return_url: Callable[[uuid.UUID], str],
    cancel_url: Callable[[uuid.UUID], str],
) -> PendingTopUp:
    """Start a checkout for ``amount_micros`` (whole cents, $1 … $10,000) and record it.

    ``click_key`` identifies the click (the form's nonce): the same click again returns
    the same checkout instead of a second purchase. ``return_url``/``cancel_url`` build
    the absolute URLs pymthouse sends the user back to, from this top-up's id (pymthouse
    appends nothing to them). The row is written only once pymthouse returned a
    checkout session.
    """
    existing = PendingTopUp.objects.filter(click_key=click_key, account_id=user.pk).first()
    if existing is not None:
        return existing
    if amount_micros % 10_000 or not TOP_UP_MIN_MICROS <= amount_micros <= TOP_UP_MAX_MICROS:
        raise MerchantBillingError(
            MerchantRefusal(
                "amount_invalid",
                "Choose an amount between $1.00 and $10,000.00, in whole cents.",
                "top-up amount outside pymthouse's limits (refused before any call)",
            )
        )
    # The counter the credit will be measured from: read it now (also tells us the
    # account can pay at all before the user leaves for checkout).
    read = wallet_refresh(user=user)
    if isinstance(read, MerchantRefusal):
        raise MerchantBillingError(read)
    granted_before = read.granted_micros
    top_up_id = uuid.uuid4()
    checkout = _call(
        "top-up",
        user,
        lambda: get_client().top_up_create(
            amount_usd_micros=amount_micros,
            external_user_id=user.external_user_id,
            success_url=return_url(top_up_id),
            cancel_url=cancel_url(top_up_id),
            idempotency_key=click_key,
        ),
    )
    session_id = checkout.session_id or f"no-session:{top_up_id}"
    try:
        with transaction.atomic():
            account_lock(user_id=user.pk)
            return PendingTopUp.objects.create(
                id=top_up_id,
                account_id=user.pk,
                click_key=click_key,
                session_id=session_id,
                checkout_url=checkout.checkout_url,
                amount_micros=checkout.amount_usd_micros,
                granted_before_micros=granted_before,
            )
    except IntegrityError:
        # The same click raced itself: the first row stands (its session is the one kept).
        return PendingTopUp.objects.get(click_key=click_key, account_id=user.pk)


@dataclass(frozen=True)
class TopUpProgress:
    """What the return page says: ``credited``, ``waiting`` (keep polling) or
    ``processing`` (the bound passed: pymthouse has not shown it yet)."""

    top_up: PendingTopUp
    state: str
    wallet: MerchantWallet | None
    refusal: MerchantRefusal | None = None


def top_up_progress(*, user: User, top_up_id: uuid.UUID) -> TopUpProgress | None:
    """Re-read the wallet (the credit arrives through the mirror) and say where the
    top-up is; ``None`` if it is not this user's. Never starts a purchase."""
    top_up = PendingTopUp.objects.filter(pk=top_up_id, account_id=user.pk).first()
    if top_up is None:
        return None
    refusal: MerchantRefusal | None = None
    if top_up.status == TopUpStatus.PENDING:
        read = wallet_refresh(user=user)
        refusal = read if isinstance(read, MerchantRefusal) else None
        top_up.refresh_from_db()
    wallet = MerchantWallet.objects.filter(account_id=user.pk).first()
    if top_up.status == TopUpStatus.CREDITED:
        state = "credited"
    elif top_up.status == TopUpStatus.CANCELLED:
        state = "cancelled"
    elif timezone.now() - top_up.created_at > timedelta(
        seconds=settings.BILLING_TOPUP_CONFIRM_SECONDS
    ):
        state = "processing"
    else:
        state = "waiting"
    return TopUpProgress(top_up=top_up, state=state, wallet=wallet, refusal=refusal)


@transaction.atomic
def top_up_cancel(*, user: User, top_up_id: uuid.UUID) -> PendingTopUp | None:
    """The user came back through the cancel URL: nothing was charged. A top-up the
    mirror already saw credited stays credited."""
    account_lock(user_id=user.pk)
    top_up = PendingTopUp.objects.filter(pk=top_up_id, account_id=user.pk).first()
    if top_up is not None and top_up.status == TopUpStatus.PENDING:
        top_up.status = TopUpStatus.CANCELLED
        top_up.resolved_at = timezone.now()
        top_up.save(update_fields=["status", "resolved_at"])
    return top_up


# --- plans ----------------------------------------------------------------------------


def merchant_plans(*, user: User) -> list[Plan]:
    """pymthouse's plan catalogue that a user may choose (active, not discovery-only)."""
    plans = _call("plan list", user, lambda: get_client().plans_list())
    return [
        plan
        for plan in plans
        if plan.status == "active"
        and not plan.is_network_default
        and plan.type not in _HIDDEN_PLAN_TYPES
    ]


def merchant_subscription(*, user: User) -> UserSubscription:
    return _call(
        "subscription read",
        user,
        lambda: get_client().subscription_get(external_user_id=user.external_user_id),
    )


def plan_change(
    *, user: User, plan_id: str, success_url: str, cancel_url: str
) -> SubscriptionChange:
    """Ask pymthouse to move the user to ``plan_id``. With no saved card the answer
    carries a setup-mode ``checkout_url`` and nothing changed yet: the caller sends the
    user there and calls this again when they return (pymthouse's webhook saves the card
    but never applies the plan; pymthouse/pymthouse@5ee7cfc7
    ``src/lib/openmeter/subscriptions-billing.ts``)."""
    return _call(
        "plan change",
        user,
        lambda: get_client().subscription_change(
            external_user_id=user.external_user_id,
            plan_id=plan_id,
            success_url=success_url,
            cancel_url=cancel_url,
        ),
    )


def plan_cancel(*, user: User) -> SubscriptionCancel:
    """Cancel at the end of the period (pymthouse's default timing)."""
    return _call(
        "plan cancel",
        user,
        lambda: get_client().subscription_cancel(external_user_id=user.external_user_id),
    )


def plan_resume(*, user: User) -> SubscriptionResume:
    """Undo a scheduled cancellation."""
    return _call(
        "plan resume",
        user,
        lambda: get_client().subscription_resume(external_user_id=user.external_user_id),
    )


# --- invoices and cards ---------------------------------------------------------------


def merchant_invoices(*, user: User, page: int = 1) -> InvoicePage:
    return _call(
        "invoice list",
        user,
        lambda: get_client().invoices_list(external_user_id=user.external_user_id, page=page),
    )


def merchant_invoice_link(*, user: User, invoice_id: str) -> str | None:
    """The hosted page (or PDF) of one of the user's invoices, if Stripe has one."""
    links = _call(
        "invoice link",
        user,
        lambda: get_client().invoice_hosted_url(
            external_user_id=user.external_user_id, invoice_id=invoice_id
        ),
    )
    return links.hosted_invoice_url or links.invoice_pdf


def merchant_cards(*, user: User) -> tuple[PaymentMethod, ...]:
    return _call(
        "card list",
        user,
        lambda: get_client().payment_methods_list(external_user_id=user.external_user_id),
    )


def card_setup_start(*, user: User, success_url: str, cancel_url: str) -> str:
    """A setup-mode checkout that saves a card (changes no plan); its URL."""
    setup = _call(
        "card setup",
        user,
        lambda: get_client().payment_method_setup(
            external_user_id=user.external_user_id,
            success_url=success_url,
            cancel_url=cancel_url,
        ),
    )
    return setup.checkout_url
