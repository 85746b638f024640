"""In a real Chromium: create a key on the API page, use it, revoke it; the generate page
sends a fresh Idempotency-Key with each click."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from accounts.models import ApiKey
from billing.services import account_change_plan, plans_seed
from inference.models import Generation
from tests.billing.conftest import grant
from tests.browser.test_generate_flow import browser_page  # noqa: F401  (fixture)
from tests.browser.test_layout import _sign_in
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.browser


def test_create_use_and_revoke_a_key_then_generate_sends_one_key_per_click(
    live_server,
    sandbox: SandboxControl,
    transactional_db: Any,
    browser_page,  # noqa: F811
) -> None:
    page = browser_page
    user = UserFactory()
    plan = next(plan for plan in plans_seed() if plan.slug == "pay-as-you-go")
    account_change_plan(user=user, plan=plan, acting_user=None, reason="browser test")
    grant(user, 5_000_000, key=f"browser-credit-{user.pk}")
    _sign_in(page, live_server, user)

    page.goto(f"{live_server.url}/accounts/api/")
    page.locator("[data-no-keys]").wait_for(state="visible")
    page.fill("#id_name", "browser script")
    page.select_option("#id_expires_in_days", "30")
    page.click("form.api-key-form button[type=submit]")
    secret = page.locator("[data-new-secret]").inner_text().strip()
    assert re.fullmatch(r"phk_[A-Za-z0-9_-]{43}", secret)
    assert ApiKey.objects.get().name == "browser script"
    used = Client().get("/api/v1/generations", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert used.status_code == 200

    page.goto(f"{live_server.url}/accounts/api/")
    assert secret not in page.content()
    row = page.locator("[data-api-key]")
    assert row.count() == 1
    assert row.locator("code").inner_text() == f"{secret[:12]}…"
    row.locator("button", has_text="Revoke").click()
    page.locator(".message.success").wait_for(state="visible")
    assert "revoked" in page.locator(".message.success").inner_text()
    assert page.locator("[data-api-key] .badge").inner_text().startswith("Revoked")
    refused = Client().get("/api/v1/generations", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert refused.status_code == 401

    # The generate page: each click carries its own Idempotency-Key.
    keys = []
    page.on(
        "request",
        lambda request: (
            keys.append(request.headers.get("idempotency-key"))
            if request.method == "POST" and request.url.endswith("/api/v1/generations")
            else None
        ),
    )
    page.goto(f"{live_server.url}/generate/")
    page.fill("textarea[name=prompt]", "a lighthouse at dusk")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/generations")) as first:
        page.click("[data-submit]")
    assert first.value.status == 201
    page.goto(f"{live_server.url}/generate/")
    page.fill("textarea[name=prompt]", "a fox in the snow")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/generations")) as second:
        page.click("[data-submit]")
    assert second.value.status == 201
    assert len(keys) == 2
    assert all(keys)
    assert keys[0] != keys[1]
    assert Generation.objects.filter(owner=user).count() == 2
