"""Issue 17 item 5 in a real Chromium: a job you can watch, cancel and retry.

The whole stack on loopback: the production web process (ASGI: the event stream), a
real Celery worker process and the sandbox. The sandbox's discovery is held back (a
fault with a delay) so the run waits before its payment claim: long enough to see it
running and cancel it.
"""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import ProvisioningStatus, User
from billing.models import EntryKind, Hold, HoldStatus
from inference.models import Generation, GenerationStatus
from tests.browser.test_generate_flow import browser_page  # noqa: F401  (fixture)
from tests.browser.test_layout import _check_layout, _sign_in
from tests.helpers import wait_for
from tests.inference.paying_user import ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl
from tests.web_server import WebServerProcess
from tests.worker import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker]

DISCOVER = "/signer/discover-orchestrators"
PAYMENT = "/signer/generate-live-payment"
PROMPT = "A lighthouse on a cliff at dusk, volumetric light, oil painting"


def _console_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def _recent(page: Any, generation: Generation, status: str) -> Any:
    link = f"a[href='/generations/{generation.pk}/']"
    return page.locator(f"[data-recent-grid] li[data-status='{status}']:has({link})")


def _provisioned_user() -> Any:
    user = pay_as_you_go_user()
    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED,
        timeout=30,
    )
    return user


def test_watch_a_running_job_in_recent_cancel_it_before_payment_then_retry_it(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    browser_page,  # noqa: F811
) -> None:
    with_provisioning = _provisioned_user()
    page = browser_page
    errors = _console_errors(page)
    _sign_in(page, web_server, with_provisioning)
    sandbox.add_fault("GET", DISCOVER, delay=6, times=1)  # the first run waits before paying

    page.goto(f"{web_server.url}/generate/")
    page.fill("#id_prompt", PROMPT)
    page.click("label.chip:has-text('Square (small)')")
    page.click("[data-submit]")

    card = page.locator("[data-progress-card]")
    card.wait_for(state="visible")
    first = Generation.objects.get(owner=with_provisioning)
    recent = page.locator(f"[data-recent-grid] li:has(a[href='/generations/{first.pk}/'])")
    recent.wait_for(state="visible")  # in "Recent" from the start, before it finished
    assert recent.get_attribute("data-status") in ("queued", "running")
    page.locator("[data-status-badge].running").wait_for(timeout=30_000)
    _recent(page, first, "running").wait_for()
    # Waiting on discovery (the fault's delay): the step is current, the ones before done.
    page.locator("[data-steps] [data-step='connecting'][data-state='current']").wait_for()
    assert page.locator("[data-steps] [data-step='authorizing']").get_attribute("data-state") == (
        "done"
    )
    elapsed = card.locator("[data-elapsed]")
    before = elapsed.inner_text()
    page.wait_for_function(
        "(before) => document.querySelector('[data-progress-card] [data-elapsed]')"
        ".textContent !== before",
        arg=before,
    )  # ticking in the browser between polls
    assert page.get_attribute("[data-job-detail]", "href") == f"/generations/{first.pk}/"

    page.click("[data-progress-card] [data-cancel]")

    page.locator("[data-status-badge].canceled").wait_for()
    assert Generation.objects.get(pk=first.pk).status == GenerationStatus.CANCELED
    assert Hold.objects.get(generation_id=first.pk).status == HoldStatus.RELEASED
    assert card.locator("[data-cancel]").is_hidden()
    assert card.locator("[data-steps] [data-step='done']").inner_text().startswith("Canceled")
    _recent(page, first, "canceled").wait_for()
    # The worker's run wakes up, finds it canceled at its claim and buys nothing.
    wait_for(lambda: len(sandbox.requests(DISCOVER)) >= 1, timeout=30)
    page.wait_for_timeout(7_000)
    assert sandbox.requests(PAYMENT) == []
    assert Generation.objects.get(pk=first.pk).tickets_paid == 0

    page.click("[data-progress-card] [data-retry]")

    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    second = Generation.objects.exclude(pk=first.pk).get(owner=with_provisioning)
    assert (second.prompt, second.width, second.height, second.model_id) == (
        first.prompt,
        first.width,
        first.height,
        first.model_id,
    )
    assert second.status == GenerationStatus.SUCCEEDED
    assert page.get_attribute("[data-result-detail]", "href") == f"/generations/{second.pk}/"
    assert page.locator("[data-recent-grid] .gen-card-link").first.get_attribute("href") == (
        f"/generations/{second.pk}/"
    )
    assert [r["status"] for r in sandbox.requests(PAYMENT)] == [200]  # one payment, the retry's
    # The canceled one's hold came back; the retry was held and charged like any submit.
    assert ledger_kinds(with_provisioning) == [
        EntryKind.GRANT,
        EntryKind.HOLD,
        EntryKind.HOLD_RELEASE,
        EntryKind.HOLD,
        EntryKind.HOLD_RELEASE,
        EntryKind.USAGE_DEBIT,
    ]
    assert Hold.objects.get(generation_id=second.pk).status == HoldStatus.SETTLED
    assert errors == []


def test_a_failed_job_offers_a_details_link_and_retry(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    browser_page,  # noqa: F811
) -> None:
    user = _provisioned_user()
    page = browser_page
    errors = _console_errors(page)
    _sign_in(page, web_server, user)
    sandbox.add_fault("GET", DISCOVER, status=401, body={"error": "invalid_token"}, times=1)

    page.goto(f"{web_server.url}/generate/")
    page.fill("#id_prompt", PROMPT)
    page.click("[data-submit]")

    page.locator("[data-status-badge].failed").wait_for(timeout=60_000)
    failed = Generation.objects.get(owner=user)
    assert failed.status == GenerationStatus.FAILED
    details = page.locator("[data-progress-card] [data-job-detail]")
    assert details.is_visible()
    assert details.get_attribute("href") == f"/generations/{failed.pk}/"
    assert page.locator("a[href='#']").count() == 0

    page.click("[data-progress-card] [data-retry]")

    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    assert Generation.objects.filter(owner=user).count() == 2
    assert errors == []


def test_job_pages_fit_a_phone_and_a_desktop(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    browser_page,  # noqa: F811
) -> None:
    """The detail page of a queued job (steps, queue position, cancel) and the gallery
    with its filters, at 390 and 1280 px."""
    user = pay_as_you_go_user()
    from inference.services import generation_create

    queued = generation_create(owner=user, prompt=PROMPT, width=512, height=512, enqueue=False)
    _sign_in(browser_page, web_server, user)
    _check_layout(
        browser_page,
        f"{web_server.url}/generations/{queued.pk}/",
        "detail-queued",
        ready=lambda page: page.locator("[data-steps]").wait_for(state="visible"),
    )
    assert browser_page.locator("[data-queue-position]").inner_text() == "1"
    _check_layout(
        browser_page,
        f"{web_server.url}/gallery/?q=lighthouse&status=queued",
        "gallery-filtered",
        ready=lambda page: page.locator("[data-gallery-filters]").wait_for(state="visible"),
    )
