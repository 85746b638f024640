"""Sign in with the sandbox's SSO button in a real Chromium (what `make run` offers)."""

from __future__ import annotations

import pytest

from accounts.models import User
from tests.browser.test_generate_flow import browser_page  # noqa: F401  (fixture)
from tests.sandbox_server import SandboxControl

pytestmark = [pytest.mark.browser]


def test_continue_with_pymthouse_signs_in_a_new_user(
    live_server,
    sandbox: SandboxControl,
    browser_page,  # noqa: F811
) -> None:
    page = browser_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.click("text=Continue with pymthouse (sandbox)")
    # allauth asks before leaving the site (starting SSO is a POST).
    page.click("form button[type=submit]")
    page.wait_for_url("**/oidc/interaction?uid=*")
    assert "Sign in to pymthouse" in page.content()
    with page.expect_navigation(url=f"{live_server.url}/"):
        page.click("button:has-text('Grace Hopper')")
    assert "grace@sandbox.pymthouse.test" in page.locator("header").inner_text()
    user = User.objects.get(email="grace@sandbox.pymthouse.test")
    assert user.socialaccount_set.get().provider == "pymthouse"
