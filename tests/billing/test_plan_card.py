"""Paying for a plan by card against localstripe over real HTTP: the quote charged in
whole cents and re-derived before charging, fulfilment (never credit) once per
PaymentIntent whatever the webhooks do, a refunded subscription ending at once, renewal
off-session once per period, a declined renewal, no renewal after a cancel, the pay
page and the receipts (billing/services/payments.py, docs/billing.md "Paying for a plan")."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone

from accounts.models import User
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentPurpose,
    PaymentStatus,
    Plan,
    PlanType,
    StripeCustomer,
)
from billing.services import account_change_plan, account_open, subscription_purchase
from billing.services.payments import PlanPriceChangedError, subscription_renewal_run
from billing.services.subscriptions import (
    cancel_target,
    card_amount,
    plan_change_free,
    plan_change_quote,
)
from billing.tasks import subscription_renewals_task
from tests.billing.stripe_helpers import (
    DECLINED_AT_CHARGE,
    VISA_3DS,
    browser_post,
    card_save,
    event_body,
    stripe_get,
    stripe_post,
    webhook_post,
)

pytestmark = pytest.mark.usefixtures("stripe_sandbox")

STUDIO = 29_000_000
DECLINED = "Your card was declined; renew to keep generating."


def account_of(user: User) -> Account:
    account_open(user_id=user.pk)
    return Account.objects.select_related("plan", "pending_plan").get(pk=user.pk)


def fees(user: User) -> list[LedgerEntry]:
    return list(
        LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.SUBSCRIPTION_FEE).order_by(
            "id"
        )
    )


def intents_of(user: User) -> list[dict[str, Any]]:
    customer = StripeCustomer.objects.get(account_id=user.pk)
    listed = stripe_get("/v1/payment_intents?limit=100")["data"]
    return [pi for pi in listed if pi["customer"] == customer.customer_id]


def on_studio(user: User, plans: dict[str, Plan], *, starts: datetime, ends: datetime) -> None:
    account_change_plan(
        user=user,
        plan=plans["studio"],
        acting_user=None,
        reason="test setup",
        subscription_starts_at=starts,
        subscription_ends_at=ends,
    )


@pytest.fixture
def pro_plan(plans: dict[str, Plan]) -> Plan:
    return Plan.objects.create(
        slug="pro",
        name="Pro subscription",
        plan_type=PlanType.SUBSCRIPTION,
        monthly_generation_cap=2000,
        subscription_fee_micros=99_000_000,
    )


@pytest.fixture
def studio_user(make_user: Callable[..., User], plans: dict[str, Plan]) -> User:
    """On Studio ($29.00) with 20 of its 30 days left."""
    user = make_user()
    now = timezone.now()
    on_studio(user, plans, starts=now - timedelta(days=10), ends=now + timedelta(days=20))
    return user


@pytest.fixture
def renewing_user(make_user: Callable[..., User], plans: dict[str, Plan]) -> User:
    """On Studio, the period ending in an hour (within the renewal lead), a card saved."""
    user = make_user()
    now = timezone.now()
    on_studio(user, plans, starts=now - timedelta(days=30) + timedelta(hours=1),
              ends=now + timedelta(hours=1))  # fmt: skip
    return user


def test_sub_cent_amounts_are_charged_up_to_the_cent_and_at_least_stripes_minimum() -> None:
    assert card_amount(0) == 0
    assert card_amount(46_666_667) == 46_670_000
    assert card_amount(46_670_000) == 46_670_000
    assert card_amount(46_660_001) == 46_670_000
    assert card_amount(1) == 500_000
    assert card_amount(499_999) == 500_000
    assert card_amount(500_001) == 510_000


@pytest.mark.django_db
def test_an_upgrade_is_charged_exactly_the_quoted_cents_and_fulfilled_not_credited(
    studio_user: User, pro_plan: Plan
) -> None:
    card_save(studio_user)
    before = account_of(studio_user)
    quote = plan_change_quote(account=before, plan=pro_plan, now=timezone.now())
    # (99 − 29) × 20/30 = 46.666…: $46.67 by card, and the page says why.
    assert quote.charge_now_micros == 46_670_000
    assert quote.summary.startswith("You pay $46.67 now ($46.666")
    assert "rounded up to the cent): the difference between $99.00 and $29.00" in quote.summary
    result = subscription_purchase(
        user=studio_user, plan=pro_plan, quoted_micros=46_670_000, request_key="up-1"
    )
    payment = result.payment
    assert (payment.status, payment.purpose, payment.plan_id) == (
        PaymentStatus.SUCCEEDED,
        PaymentPurpose.SUBSCRIPTION,
        pro_plan.pk,
    )
    intent = stripe_get(f"/v1/payment_intents/{payment.payment_intent_id}")
    assert (intent["amount"], intent["currency"]) == (4667, "usd")
    assert intent["metadata"]["pixelhouse_payment"] == str(payment.pk)
    [fee] = fees(studio_user)
    assert (fee.amount_micros, fee.effect) == (46_670_000, EntryEffect.RECORD)
    assert fee.idempotency_key == f"subscription_fee:payment:{payment.payment_intent_id}"
    account = account_of(studio_user)
    assert account.plan.slug == "pro"
    assert (account.subscription_starts_at, account.subscription_ends_at) == (
        before.subscription_starts_at,
        before.subscription_ends_at,
    )
    # Nothing was credited: a subscription is not credit.
    assert not LedgerEntry.objects.filter(account_id=studio_user.pk, kind=EntryKind.PURCHASE)
    assert (account.balance_micros, account.available_micros) == (0, 0)
    # The same click again charges nothing more.
    again = subscription_purchase(
        user=studio_user, plan=pro_plan, quoted_micros=46_670_000, request_key="up-1"
    )
    assert again.payment.pk == payment.pk
    assert len(intents_of(studio_user)) == 1


@pytest.mark.django_db
def test_a_price_that_moved_is_refused_before_anything_is_charged(
    studio_user: User, pro_plan: Plan
) -> None:
    card_save(studio_user)
    with pytest.raises(PlanPriceChangedError) as raised:
        subscription_purchase(
            user=studio_user, plan=pro_plan, quoted_micros=46_660_000, request_key="stale"
        )
    assert raised.value.quote.charge_now_micros == 46_670_000
    assert raised.value.message == (
        "The price changed to $46.67 since you opened this page; nothing was charged. "
        "Check the new amount and pay again."
    )
    assert Payment.objects.count() == 0
    assert intents_of(studio_user) == []
    assert account_of(studio_user).plan.slug == "studio"


@pytest.mark.django_db
def test_replayed_webhooks_fulfil_a_new_subscription_once(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    card_save(user)
    payment = subscription_purchase(
        user=user, plan=plans["studio"], quoted_micros=STUDIO, request_key="sub-1"
    ).payment
    account = account_of(user)
    assert account.plan.slug == "studio"
    assert account.subscription_ends_at - account.subscription_starts_at == timedelta(days=30)
    assert account.subscription_starts_at == payment.created_at
    intent = stripe_get(f"/v1/payment_intents/{payment.payment_intent_id}")
    event = event_body("payment_intent.succeeded", intent)
    client = Client()
    for _ in range(3):
        assert webhook_post(client, event).status_code == 200
    assert webhook_post(client, event_body("payment_intent.succeeded", intent)).status_code == 200
    assert [f.amount_micros for f in fees(user)] == [STUDIO]
    again = account_of(user)
    assert (again.subscription_starts_at, again.subscription_ends_at) == (
        account.subscription_starts_at,
        account.subscription_ends_at,
    )
    assert not LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.PURCHASE)


def lost_answer(user: User, plan: Plan, cents: int) -> tuple[Payment, dict[str, Any]]:
    """Stripe charged the subscription, our process never stored its answer."""
    customer = StripeCustomer.objects.get(account_id=user.pk)
    payment = Payment.objects.create(
        account=account_of(user),
        purpose=PaymentPurpose.SUBSCRIPTION,
        plan=plan,
        amount_micros=cents * 10_000,
        request_key="lost",
        status=PaymentStatus.SUBMITTED,
    )
    intent = stripe_post(
        "/v1/payment_intents",
        {"amount": cents, "currency": "usd", "customer": customer.customer_id,
         "payment_method": customer.payment_method_id, "confirm": True,
         "metadata": {"pixelhouse_payment": str(payment.pk)}},
    )  # fmt: skip
    return payment, intent


@pytest.mark.django_db
def test_a_refund_before_the_success_event_fulfils_then_ends_the_subscription_once(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    card_save(user)
    payment, intent = lost_answer(user, plans["studio"], 2900)
    stripe_post("/v1/refunds", {"payment_intent": intent["id"]})
    charge = stripe_get(f"/v1/charges/{intent['latest_charge']['id']}")
    refunded = event_body("charge.refunded", charge)
    success = event_body("payment_intent.succeeded", intent)
    client = Client()
    assert webhook_post(client, refunded).status_code == 200  # reordered: refund first
    assert webhook_post(client, success).status_code == 200
    assert webhook_post(client, refunded).status_code == 200  # replayed
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert [f.amount_micros for f in fees(user)] == [STUDIO]
    [reversal] = LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.PAYMENT_REVERSAL)
    assert (reversal.effect, reversal.amount_micros) == (EntryEffect.RECORD, STUDIO)
    assert reversal.reason.endswith("the subscription ended")
    account = account_of(user)
    # Ended at once: the default plan, no period left, no credit taken or owed.
    assert account.plan.slug == settings.BILLING_DEFAULT_PLAN
    assert account.subscription_ends_at <= timezone.now()
    assert (account.balance_micros, account.suspended) == (0, False)


def run_renewals_concurrently(runs: int) -> list[int]:
    barrier = threading.Barrier(runs)
    results: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            value = subscription_renewals_task()
        except Exception as exc:
            value = -1
            logging.getLogger(__name__).exception("renewal run failed: %r", exc)
        finally:
            connection.close()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_beat_runs_renew_once_per_period(renewing_user: User) -> None:
    card_save(renewing_user)
    before = account_of(renewing_user)
    assert run_renewals_concurrently(2) == [0, 1]
    [payment] = Payment.objects.filter(account_id=renewing_user.pk)
    assert (payment.purpose, payment.status, payment.amount_micros) == (
        PaymentPurpose.RENEWAL,
        PaymentStatus.SUCCEEDED,
        STUDIO,
    )
    assert payment.renews_period_end == before.subscription_ends_at
    [intent] = intents_of(renewing_user)
    assert intent["amount"] == 2900
    assert [f.amount_micros for f in fees(renewing_user)] == [STUDIO]
    after = account_of(renewing_user)
    assert after.subscription_starts_at == before.subscription_ends_at
    assert after.subscription_ends_at == before.subscription_ends_at + timedelta(days=30)
    # The next run finds nothing due; the database refuses a second renewal of the period.
    assert subscription_renewals_task() == 0
    assert len(intents_of(renewing_user)) == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(
            account=after,
            purpose=PaymentPurpose.RENEWAL,
            plan=after.plan,
            amount_micros=STUDIO,
            request_key="another",
            renews_period_end=before.subscription_ends_at,
        )


@pytest.mark.django_db
def test_a_declined_renewal_leaves_the_subscription_to_end_and_says_so(
    renewing_user: User,
) -> None:
    card_save(renewing_user, number=DECLINED_AT_CHARGE)
    before = account_of(renewing_user)
    assert subscription_renewals_task() == 0
    [payment] = Payment.objects.filter(account_id=renewing_user.pk)
    assert (payment.status, payment.failure_message) == (
        PaymentStatus.FAILED,
        "Your card was declined.",
    )
    assert fees(renewing_user) == []
    after = account_of(renewing_user)
    assert after.subscription_ends_at == before.subscription_ends_at
    # Never retried for the same period.
    assert subscription_renewals_task() == 0
    assert len(intents_of(renewing_user)) == 1
    client = Client()
    client.force_login(renewing_user)
    for url in ("/billing/", "/billing/plans/"):
        html = client.get(url).content.decode()
        assert DECLINED in html, url
        assert "renewing $29.00 failed (Your card was declined.)" in html
    # Once the period has ended, the plans page offers the renewal at the whole fee.
    Account.objects.filter(pk=renewing_user.pk).update(
        subscription_starts_at=before.subscription_starts_at - timedelta(hours=2),
        subscription_ends_at=before.subscription_ends_at - timedelta(hours=2),
    )
    Payment.objects.filter(pk=payment.pk).update(
        renews_period_end=before.subscription_ends_at - timedelta(hours=2)
    )
    html = client.get("/billing/plans/").content.decode()
    assert 'href="/billing/plans/studio/pay/" data-renew>Renew Studio subscription</a>' in html


@pytest.mark.django_db
def test_a_cancelled_subscription_is_not_renewed(renewing_user: User) -> None:
    card_save(renewing_user)
    plan_change_free(user=renewing_user, plan=cancel_target())
    assert subscription_renewals_task() == 0
    assert subscription_renewal_run(account_id=renewing_user.pk, now=timezone.now()) is None
    assert Payment.objects.count() == 0
    assert intents_of(renewing_user) == []
    assert fees(renewing_user) == []


@pytest.mark.django_db
def test_the_pay_page_takes_a_new_card_and_refuses_a_moved_price_with_the_new_quote(
    studio_user: User, pro_plan: Plan
) -> None:
    client = Client()
    client.force_login(studio_user)
    response = client.get("/billing/plans/pro/pay/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "data-card-element" in html
    assert "data-card-pay-form" in html
    assert 'name="quoted_micros" value="46670000"' in html
    assert "Pay $46.67" in html
    assert f"script-src 'self' {settings.STRIPE_API_BASE};" in response["Content-Security-Policy"]
    assert "js/card-payment.js" in html
    card_save(studio_user)
    stale = client.post(
        "/billing/plans/pro/pay/", {"quoted_micros": "46660000", "request_key": "page-1"}
    )
    assert stale.status_code == 409
    html = stale.content.decode()
    assert "The price changed to $46.67 since you opened this page; nothing was charged." in html
    assert 'name="quoted_micros" value="46670000"' in html
    assert Payment.objects.count() == 0
    paid = client.post(
        "/billing/plans/pro/pay/", {"quoted_micros": "46670000", "request_key": "page-2"}
    )
    payment = Payment.objects.get()
    assert paid.status_code == 302
    assert paid["Location"] == f"/billing/plans/?payment={payment.pk}"
    page = client.get(paid["Location"]).content.decode()
    assert "Payment received: $46.67 for Pro subscription." in page
    [fee] = fees(studio_user)
    assert f'href="/billing/receipts/{fee.pk}/"' in page
    receipt = client.get(f"/billing/receipts/{fee.pk}/").content.decode()
    assert 'data-receipt-amount="46670000">$46.67<' in receipt
    assert "A subscription paid by card, in US dollars" in receipt
    assert "Balance after" not in receipt
    # Another user's receipt is none.
    other = Client()
    other.force_login(User.objects.create_user(email="x@example.com", password="pw-x-123456"))
    assert other.get(f"/billing/receipts/{fee.pk}/").status_code == 404


@pytest.mark.django_db
def test_three_d_secure_on_a_plan_payment_changes_the_plan_once_the_bank_agrees(
    studio_user: User, pro_plan: Plan
) -> None:
    customer = card_save(studio_user)
    method = stripe_post(
        "/v1/payment_methods",
        {"type": "card", "card": {"number": VISA_3DS, "exp_month": "12", "exp_year": "2030",
                                  "cvc": "123"}},
    )  # fmt: skip
    StripeCustomer.objects.filter(pk=customer.pk).update(payment_method_id=method["id"])
    client = Client()
    client.force_login(studio_user)
    response = client.post(
        "/billing/plans/pro/pay/", {"quoted_micros": "46670000", "request_key": "3ds"}
    )
    payment = Payment.objects.get()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert "data-confirm-payment" in response.content.decode()
    assert account_of(studio_user).plan.slug == "studio"
    assert fees(studio_user) == []
    secret = response.content.decode().split('data-client-secret="')[1].split('"')[0]
    browser_post(
        f"/v1/payment_intents/{payment.payment_intent_id}/_authenticate?success=true",
        {"key": settings.STRIPE_PUBLISHABLE_KEY, "client_secret": secret},
    )
    done = client.post(f"/billing/credit/{payment.pk}/confirmed/")
    assert done["Location"] == f"/billing/plans/?payment={payment.pk}"
    assert account_of(studio_user).plan.slug == "pro"
    assert [f.amount_micros for f in fees(studio_user)] == [46_670_000]


@pytest.mark.django_db
def test_with_payments_off_the_pay_page_says_so_and_nothing_is_charged_or_renewed(
    studio_user: User, pro_plan: Plan, renewing_user: User, settings: Any
) -> None:
    card_save(renewing_user)
    settings.STRIPE_SECRET_KEY = ""
    client = Client()
    client.force_login(studio_user)
    html = client.get("/billing/plans/pro/pay/").content.decode()
    assert "Card payments aren't available right now." in html
    assert "data-card-pay" not in html
    response = client.post(
        "/billing/plans/pro/pay/", {"quoted_micros": "46670000", "request_key": "off"}
    )
    assert response.status_code == 503
    assert subscription_renewals_task() == 0
    assert Payment.objects.count() == 0
    assert account_of(studio_user).plan.slug == "studio"
    assert fees(renewing_user) == []


@pytest.mark.django_db
def test_the_stripe_sandbox_refuses_a_charge_below_stripes_minimum(usage_user: User) -> None:
    """What ``card_amount`` guards against: Stripe refuses $0.49 (docs/upstream.md S7)."""
    customer = card_save(usage_user)
    body = {"currency": "usd", "customer": customer.customer_id,
            "payment_method": customer.payment_method_id, "confirm": True}  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as raised:
        stripe_post("/v1/payment_intents", {**body, "amount": 49})
    assert raised.value.code == 400
    error = json.loads(raised.value.read())["error"]
    assert (error["code"], error["message"]) == (
        "amount_too_small",
        "Amount must be at least $0.50 usd",
    )
    assert intents_of(usage_user) == []
    assert stripe_post("/v1/payment_intents", {**body, "amount": 50})["status"] == "succeeded"


@pytest.mark.django_db
def test_a_proration_under_stripes_minimum_is_quoted_as_the_minimum_and_says_so(
    make_user: Callable[..., User], plans: dict[str, Plan], pro_plan: Plan
) -> None:
    user = make_user()
    now = timezone.now()
    on_studio(user, plans, starts=now - timedelta(days=30) + timedelta(minutes=1),
              ends=now + timedelta(minutes=1))  # fmt: skip
    quote = plan_change_quote(account=account_of(user), plan=pro_plan, now=now)
    # 70,000,000 × 60 s / 30 days = 1,620.37… → 1,621 µ$, below Stripe's $0.50.
    assert quote.charge_now_micros == 500_000
    assert quote.summary.startswith(
        "You pay $0.50 now ($0.001621 raised to $0.50, the smallest card payment): "
    )
