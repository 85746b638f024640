"""Merchant mode in a real Chromium: a user with an empty pymthouse wallet is refused on
/generate/, presses Add credit, pays on the sandbox's checkout page, comes back, sees
the new balance in dollars and generates an image.

The whole stack on loopback: the live server (this process), a real Celery worker (in
merchant mode too) and the sandbox standing in for pymthouse (merchant app, OpenMeter
and Stripe on, the credit landing a second after the payment like Stripe's webhook).
"""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import ProvisioningStatus, User
from accounts.services import user_create
from billing.models import EntryKind, LedgerEntry
from inference.models import Generation, GenerationStatus
from tests.browser.test_generate_flow import EMAIL, PASSWORD, PROMPT, browser_page  # noqa: F401
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.worker import running_worker

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_empty_wallet_add_credit_pay_return_and_generate(
    live_server: Any,
    transactional_db: Any,
    sandbox: SandboxControl,
    browser_page: Any,  # noqa: F811
    settings: Any,
) -> None:
    settings.BILLING_MODE = "merchant"
    settings.BILLING_WALLET_MAX_AGE_SECONDS = 0
    sandbox.set_billing(
        billingMode="merchant", billingEnabled=True, connectReady=True, creditDelaySeconds=1
    )
    with running_worker(env={"BILLING_MODE": "merchant"}):
        user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
        wait_for(
            lambda: (
                User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED
            ),
            timeout=30,
        )
        page = browser_page
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=login]", EMAIL)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")

        # Refused: nothing in the wallet.
        page.goto(f"{live_server.url}/generate/")
        refusal = page.locator("[data-quote-refusal]")
        assert refusal.is_visible()
        assert "Add credit to keep generating." in refusal.inner_text()
        assert page.locator("[data-submit]").is_disabled()
        assert page.locator("[data-quote-available]").inner_text() == "$0.00 available"
        assert page.locator("[data-quote-action]").inner_text() == "Add credit"

        # Add credit → pymthouse's (the sandbox's) checkout → pay.
        with page.expect_navigation():
            page.click("[data-quote-action]")
        page.fill("[data-custom-amount]", "12.50")
        with page.expect_navigation():
            page.click("[data-pay]")
        assert page.url.startswith(sandbox.url + "/checkout/")
        assert "$12.50" in page.inner_text("body")
        with page.expect_navigation():
            page.click("#pay")

        # Back on the return page, which polls until the credit shows.
        assert page.url.startswith(f"{live_server.url}/billing/credit/")
        credited = page.locator("[data-top-up-credited]")
        credited.wait_for(state="visible", timeout=30_000)
        assert "$12.50 was added to your balance." in credited.inner_text()
        assert page.locator("[data-top-up-available]").inner_text() == "$12.50"
        assert (
            LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.WALLET_CREDIT).count()
            == 1
        )

        # Generate.
        page.goto(f"{live_server.url}/generate/")
        assert page.locator("[data-quote-available]").inner_text() == "$12.50 available"
        page.fill("#id_prompt", PROMPT)
        page.click("label.chip:has-text('Square (small)')")
        assert not page.locator("[data-submit]").is_disabled()
        page.click("[data-submit]")
        page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)

    generation = Generation.objects.get(owner=user)
    assert generation.status == GenerationStatus.SUCCEEDED
    kinds = list(
        LedgerEntry.objects.filter(account_id=user.pk).order_by("pk").values_list("kind", flat=True)
    )
    assert kinds == [
        EntryKind.WALLET_CREDIT,
        EntryKind.HOLD,
        EntryKind.HOLD_RELEASE,
        EntryKind.USAGE_DEBIT,
    ]
    assert errors == []
