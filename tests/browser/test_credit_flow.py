"""Out of credit → Add credit → pay with localstripe's card element → back on billing with
the balance in dollars → generate an image. In a real Chromium, against the live server,
a real Celery worker, the sandbox and localstripe (which also delivers its signed
``payment_intent.succeeded`` webhook to the live server)."""

from __future__ import annotations

import pytest
from django.conf import settings

from accounts.models import ProvisioningStatus, User
from accounts.services import user_create
from billing.models import EntryKind, LedgerEntry, Payment, PaymentStatus, Plan, StripeEvent
from billing.services import account_change_plan, plans_seed
from inference.models import Generation, GenerationStatus
from tests.browser.test_generate_flow import browser_page  # noqa: F401  (fixture)
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.stripe_server import StripeProcess
from tests.worker import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker]

EMAIL = "payer@example.com"
PASSWORD = "pw-payer-12345"


def test_a_user_without_credit_buys_some_and_generates(
    live_server,
    sandbox: SandboxControl,
    stripe_sandbox: StripeProcess,
    worker_process: WorkerProcess,
    browser_page,  # noqa: F811
) -> None:
    stripe_sandbox.webhook_register(
        url=f"{live_server.url}/billing/stripe/webhook/", secret=settings.STRIPE_WEBHOOK_SECRET
    )
    plans_seed()
    user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
    account_change_plan(
        user=user, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="test"
    )
    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED,
        timeout=30,
    )
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")

    # $0: the page refuses before Generate and offers Add credit.
    page.goto(f"{live_server.url}/generate/")
    assert page.locator("[data-submit]").is_disabled()
    assert "Add credit to keep generating." in page.inner_text("[data-quote-refusal]")
    with page.expect_navigation():
        page.click("[data-quote-action]")
    assert page.url == f"{live_server.url}/billing/credit/"

    # localstripe's card element (its fake Stripe.js): number, month, year, cvc, zip.
    box = page.locator("[data-card-element]")
    box.locator("input[placeholder=number]").fill("4242424242424242")
    box.locator("input[placeholder=exp_month]").fill("12")
    box.locator("input[placeholder=exp_year]").fill("30")
    box.locator("input[placeholder=cvc]").fill("123")
    box.locator("input[placeholder=postal_code]").fill("10001")
    with page.expect_navigation(url="**/billing/?payment=*"):
        page.click("button[data-preset='10000000']")

    done = page.locator("[data-payment-done]")
    assert "Payment received: $10.00 added." in done.inner_text()
    assert "Available now: $10.00." in done.inner_text()
    assert page.inner_text("[data-available-micros]") == "$10.00"
    payment = Payment.objects.get(account_id=user.pk)
    assert payment.status == PaymentStatus.SUCCEEDED
    # Stripe's own webhook arrives about a second later and credits nothing more.
    wait_for(lambda: StripeEvent.objects.filter(type="payment_intent.succeeded").exists(), 15)
    assert LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.PURCHASE).count() == 1
    with page.expect_navigation():
        page.click("[data-payment-done] a:has-text('Receipt')")
    assert page.inner_text("[data-receipt-amount]") == "$10.00"

    # And now an image.
    page.goto(f"{live_server.url}/generate/")
    assert not page.locator("[data-submit]").is_disabled()
    page.fill("#id_prompt", "A red kite over a green hill")
    page.click("[data-submit]")
    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    assert Generation.objects.get(owner=user).status == GenerationStatus.SUCCEEDED
    assert errors == []


def test_a_user_subscribes_to_studio_with_the_card_element(
    live_server,
    sandbox: SandboxControl,
    stripe_sandbox: StripeProcess,
    browser_page,  # noqa: F811
) -> None:
    """Plans → Studio → pay $29.00 with a new card in localstripe's card element → back on
    Plans on Studio for 30 days, the fee recorded once (not credit), the receipt."""
    stripe_sandbox.webhook_register(
        url=f"{live_server.url}/billing/stripe/webhook/", secret=settings.STRIPE_WEBHOOK_SECRET
    )
    plans_seed()
    user = user_create(email="subscriber@example.com", password=PASSWORD, email_verified=True)
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", "subscriber@example.com")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")

    page.goto(f"{live_server.url}/billing/plans/")
    with page.expect_navigation(url="**/billing/plans/studio/pay/"):
        page.click("[data-plan='studio'] button:has-text('Continue to pay $29.00')")
    assert page.inner_text("[data-pay-submit]") == "Pay $29.00"
    box = page.locator("[data-card-element]")
    box.locator("input[placeholder=number]").fill("4242424242424242")
    box.locator("input[placeholder=exp_month]").fill("12")
    box.locator("input[placeholder=exp_year]").fill("30")
    box.locator("input[placeholder=cvc]").fill("123")
    box.locator("input[placeholder=postal_code]").fill("10001")
    with page.expect_navigation(url="**/billing/plans/?payment=*"):
        page.click("[data-pay-submit]")

    assert "Payment received: $29.00 for Studio subscription." in page.inner_text("body")
    assert "You're on Studio subscription until" in page.inner_text(".page-head")
    payment = Payment.objects.get(account_id=user.pk)
    assert (payment.status, payment.plan.slug) == (PaymentStatus.SUCCEEDED, "studio")
    # Stripe's own webhook arrives about a second later and fulfils nothing more.
    wait_for(lambda: StripeEvent.objects.filter(type="payment_intent.succeeded").exists(), 15)
    fees = LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.SUBSCRIPTION_FEE)
    assert [fee.amount_micros for fee in fees] == [29_000_000]
    assert not LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.PURCHASE).exists()
    with page.expect_navigation():
        page.click("[data-plan-paid] a")
    assert page.inner_text("[data-receipt-amount]") == "$29.00"
    assert errors == []
