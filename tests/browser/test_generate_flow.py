"""The generate page in a real Chromium: submit, watch progress, see the image.

Runs the whole stack on loopback: the production web process (Django under ASGI,
uvicorn), a real Celery worker process and the sandbox standing in for pymthouse and
Livepeer. The page follows a generation through the event stream, and polls when the
stream cannot be opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import ProvisioningStatus, User
from accounts.services import user_create
from inference.models import Generation, GenerationStatus
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.web_server import WebServerProcess
from tests.worker import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Nothing but loopback: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
SCREENSHOT_DIR = Path(settings.BASE_DIR) / "var" / "test"
EMAIL = "e2e@example.com"
PASSWORD = "pw-e2e-12345"
PROMPT = "A lighthouse on a cliff at dusk, volumetric light, oil painting"


@pytest.fixture
def browser_page(monkeypatch):
    if not CHROMIUM.exists():
        reason = "Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)"
        if os.environ.get("REQUIRE_BROWSER"):  # CI installs it: missing means broken
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop in this thread; the ORM calls
    # this test makes between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _api_reads(page) -> list[str]:
    """Every request the page makes to the generations API, recorded as "METHOD path"."""
    seen: list[str] = []
    page.on(
        "request",
        lambda r: (
            seen.append(f"{r.method} {r.url.split('://', 1)[1].split('/', 1)[1]}")
            if "/api/v1/generations" in r.url
            else None
        ),
    )
    return seen


def test_generate_without_reload_then_find_it_in_the_gallery(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    browser_page,
) -> None:
    live_server = web_server
    sandbox.set_config(runnerLatencySeconds=2.0)  # long enough to watch it run
    user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED,
        timeout=30,
    )
    page = browser_page
    console_errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            console_errors.append(f"{m.text} {m.location.get('url', '')}")
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    api_requests = _api_reads(page)

    # Sign in through the allauth form.
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    assert "/accounts/login/" not in page.url

    # Generate.
    generate_url = f"{live_server.url}/generate/"
    page.goto(generate_url)
    page.fill("#id_prompt", PROMPT)
    page.click("label.chip:has-text('Square (small)')")
    assert page.is_checked("input[name=size][value='512x512']")
    # Record every status and stage the page shows, to check what was displayed.
    page.evaluate(
        """() => {
            window.__seen = [];
            const card = document.querySelector('[data-progress-card]');
            const record = () => {
                const badge = card.querySelector('[data-status-badge]').textContent;
                const stage = card.querySelector('[data-progress-stage]').textContent;
                const bar = card.querySelector('[data-progress-bar]');
                const value = bar.getAttribute('aria-valuenow');
                window.__seen.push(badge + '|' + stage + '|' + value);
            };
            new MutationObserver(record).observe(
                card, {subtree: true, childList: true, characterData: true, attributes: true}
            );
        }"""
    )
    page.click("[data-submit]")

    card = page.locator("[data-progress-card]")
    card.wait_for(state="visible")
    assert page.locator("[data-submit]").is_disabled()
    # Shown while running: the stream pushes each change (the runner takes 2 s).
    page.locator("[data-status-badge].running").wait_for(timeout=60_000)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "browser-generate-running.png"))
    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    assert page.url == generate_url  # no navigation happened

    generation = Generation.objects.get(owner=user)
    assert generation.status == GenerationStatus.SUCCEEDED
    assert card.locator("[data-progress-stage]").inner_text().startswith("Done in ")
    assert card.locator("[data-progress-bar]").get_attribute("aria-valuenow") == "100"
    seen = page.evaluate("window.__seen")
    assert seen[0].startswith("Queued|Waiting in the queue…|"), seen
    assert seen[-1].startswith("Succeeded|Done in "), seen
    assert seen[-1].endswith("|100"), seen
    assert any(entry.startswith("Running|Generating your image…|65") for entry in seen), seen
    shown = [int(entry.rsplit("|", 1)[1]) for entry in seen]
    assert shown == sorted(shown), seen  # the bar never went backwards
    # Pushed, not polled: one stream, and no read of the generation besides it.
    assert api_requests == [
        "POST api/v1/generations",
        f"GET api/v1/generations/{generation.pk}/events",
    ], api_requests
    assert page.get_attribute("[data-progress-card] .progress-status", "aria-live") == "polite"

    image = page.locator("[data-result-image]")
    image.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-result-image]');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    natural = page.evaluate(
        "() => { const i = document.querySelector('[data-result-image]');"
        " return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert natural == [512, 512]
    assert page.get_attribute("[data-result-detail]", "href") == f"/generations/{generation.pk}/"
    assert page.get_attribute("[data-result-download]", "href") == (
        f"/generations/{generation.pk}/image?download=1"
    )
    # The new image also leads the "Recent" strip.
    first_recent = page.locator("[data-recent-grid] .gen-card-link").first
    assert first_recent.get_attribute("href") == f"/generations/{generation.pk}/"
    assert not page.locator("[data-submit]").is_disabled()

    page.wait_for_timeout(800)  # let the progress bar finish its transition
    page.screenshot(path=str(SCREENSHOT_DIR / "browser-generate.png"), full_page=True)

    # The detail page renders the finished image and its facts.
    page.goto(f"{live_server.url}/generations/{generation.pk}/")
    page.wait_for_function("() => document.querySelector('.detail-image').naturalWidth === 512")
    assert page.locator("[data-status-badge]").inner_text() == "Succeeded"
    page.screenshot(path=str(SCREENSHOT_DIR / "browser-detail.png"), full_page=True)

    # And the gallery lists it.
    page.goto(f"{live_server.url}/gallery/")
    card_link = page.locator(f"a.gen-card-link[href='/generations/{generation.pk}/']")
    card_link.wait_for(state="visible")
    gallery_image = card_link.locator("img")
    assert gallery_image.get_attribute("loading") == "lazy"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gen-thumb img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(SCREENSHOT_DIR / "browser-gallery.png"), full_page=True)

    assert console_errors == []


def test_the_page_polls_when_the_stream_cannot_be_opened(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    browser_page,
) -> None:
    sandbox.set_config(runnerLatencySeconds=2.0)
    user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED,
        timeout=30,
    )
    page = browser_page
    api_requests = _api_reads(page)
    # The stream endpoint fails as a broken proxy would: a 502 that is not an event stream.
    page.route("**/api/v1/generations/*/events", lambda route: route.fulfill(status=502))
    page.goto(f"{web_server.url}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    page.goto(f"{web_server.url}/generate/")
    page.fill("#id_prompt", PROMPT)
    page.click("label.chip:has-text('Square (small)')")
    page.click("[data-submit]")

    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-result-image]');"
        " return i.complete && i.naturalWidth === 512; }"
    )
    generation = Generation.objects.get(owner=user)
    assert generation.status == GenerationStatus.SUCCEEDED
    poll = f"GET api/v1/generations/{generation.pk}"
    assert api_requests[:2] == ["POST api/v1/generations", f"{poll}/events"], api_requests
    assert api_requests.count(f"{poll}/events") == 1  # given up at once, not retried
    assert api_requests.count(poll) >= 2, api_requests  # then polled until it finished
    assert set(api_requests) == {"POST api/v1/generations", f"{poll}/events", poll}


def test_the_page_polls_when_the_stream_breaks_mid_run(
    web_server: WebServerProcess,
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    browser_page,
) -> None:
    sandbox.set_config(runnerLatencySeconds=4.0)
    user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED,
        timeout=30,
    )
    page = browser_page
    api_requests = _api_reads(page)
    page.goto(f"{web_server.url}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    page.goto(f"{web_server.url}/generate/")
    page.fill("#id_prompt", PROMPT)
    page.click("label.chip:has-text('Square (small)')")
    page.click("[data-submit]")
    page.locator("[data-status-badge].running").wait_for(timeout=60_000)  # via the stream

    web_server.stop()  # the stream breaks, and its reconnection is refused
    page.locator("[data-progress-error]:has-text('Connection lost; retrying…')").wait_for(
        timeout=30_000
    )
    web_server.start()

    page.locator("[data-status-badge].succeeded").wait_for(timeout=90_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-result-image]');"
        " return i.complete && i.naturalWidth === 512; }"
    )
    generation = Generation.objects.get(owner=user)
    poll = f"GET api/v1/generations/{generation.pk}"
    assert api_requests[:2] == ["POST api/v1/generations", f"{poll}/events"], api_requests
    assert api_requests.count(poll) >= 2, api_requests  # polled once the stream broke
    assert page.locator("[data-progress-error]").is_hidden()


def test_detail_page_follows_a_running_generation_until_it_finishes(
    web_server: WebServerProcess, sandbox: SandboxControl, browser_page
) -> None:
    live_server = web_server
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from tests.inference.test_views import _png

    user = user_create(email=EMAIL, password=PASSWORD, email_verified=True)
    generation = Generation.objects.create(
        owner=user,
        prompt=PROMPT,
        model_id="ByteDance/SDXL-Lightning",
        width=512,
        height=512,
        status=GenerationStatus.RUNNING,
        stage="paying",
        started_at=timezone.now(),
    )
    page = browser_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    detail_url = f"{live_server.url}/generations/{generation.pk}/"
    page.goto(detail_url)
    assert page.locator("[data-progress-stage]").inner_text() == "Paying the runner…"

    Generation.objects.filter(pk=generation.pk).update(stage="generating")
    page.wait_for_function(
        "() => document.querySelector('[data-progress-stage]').textContent"
        " === 'Generating your image…'"
    )
    assert page.get_attribute("[data-progress-bar]", "aria-valuenow") == "65"

    generation.image.save(f"{generation.pk}.png", ContentFile(_png(512, 512)), save=False)
    try:
        Generation.objects.filter(pk=generation.pk).update(
            status=GenerationStatus.SUCCEEDED,
            stage="done",
            image=generation.image.name,
            finished_at=timezone.now(),
        )
        page.wait_for_function(
            "() => { const i = document.querySelector('.detail-image');"
            " return i && i.complete && i.naturalWidth === 512; }"
        )
        assert page.url == detail_url  # swapped in place, no navigation
        assert page.locator("[data-status-badge]").inner_text() == "Succeeded"
        assert page.locator("[data-progress-bar]").count() == 0
        assert page.locator("a:has-text('Download')").get_attribute("href") == (
            f"/generations/{generation.pk}/image?download=1"
        )
    finally:
        Path(generation.image.path).unlink(missing_ok=True)
