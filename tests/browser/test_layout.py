"""Every user and staff page fits a phone (390 px) and a desktop (1280 px).

For each page and width, in a real Chromium: the document is no wider than the
viewport (no horizontal scroll), no visible text element in the main content is
squeezed into a sliver (the "one character per line" column), and nothing sticks
out past the right edge; on user pages no ETH or wei outside the image page's
"Network details". Full-page screenshots go to var/test/layout/, or with
`make screenshots` to docs/screenshots/, so a person can look at them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, User, WebhookDelivery, WebhookDeliveryStatus
from accounts.services import api_key_create, api_key_revoke
from accounts.webhooks import webhook_endpoint_set
from billing.models import EntryKind, LedgerEntry, PendingTopUp, Plan, TopUpStatus
from billing.services import account_change_plan, plans_seed, promotion_grant
from inference.failure_codes import FailureCode
from inference.models import Generation, GenerationStage, GenerationStatus
from inference.services.failures import FAILURE_MESSAGES
from inference.services.owner_actions import CANCELED_MESSAGE
from tests.billing.conftest import admit_generation, charge_at_payment, grant, new_generation
from tests.billing.stripe_helpers import card_save
from tests.browser.failing_urls import DATABASE_DOWN_PATH, FAILING_PATH
from tests.browser.test_generate_flow import browser_page  # noqa: F401  (fixture)
from tests.factories import UserFactory
from tests.inference.test_views import _png
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from usage.services.sync import usage_sync_run

pytestmark = pytest.mark.browser

# A plain test run keeps its screenshots out of the repository (var/test/layout/);
# `make screenshots` writes the committed ones in docs/screenshots/.
SCREENSHOTS = Path(settings.BASE_DIR) / os.environ.get("LAYOUT_SCREENSHOTS", "var/test/layout")
WIDTHS = {390: 844, 1280: 900}
MIN_TEXT_WIDTH = 40  # px: anything narrower that holds words is a squeezed column
KINDS = {
    "narrow": f"narrower than {MIN_TEXT_WIDTH}px",
    "outside": "past the right edge",
    "cut": "text cut off",
}

# Finds what breaks a layout, in <main>:
# - "narrow": a table cell holding text narrower than the minimum, or any other box laying
#   out words (a paragraph, a grid item, a block span) narrower than the minimum whose
#   words wrap or spill (one short word on one line, like a "Size" legend, is fine);
# - "outside": a box whose right edge passes the window's, unless an ancestor clips or
#   scrolls it;
# - "cut": a box that hides overflow and has text wider than itself (clipped sideways).
# Hidden things are skipped: display:none, closed <details>, aria-hidden, and anything in
# a box of at most 1 px (the visually-hidden pattern for screen readers).
OFFENDERS_JS = """
(minWidth) => {
  const main = document.querySelector('main');
  const describe = (el) => {
    const r = el.getBoundingClientRect();
    const cls = typeof el.className === 'string' && el.className.trim()
      ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
    return `${el.tagName.toLowerCase()}${cls} ${Math.round(r.width)}px @${Math.round(r.left)}: `
      + JSON.stringify(el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 60));
  };
  const hidden = (el) => {
    for (let node = el; node && node !== main; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.display === 'none' || style.visibility === 'hidden') return true;
      if (node.getAttribute('aria-hidden') === 'true') return true;
      if (node !== el && node.tagName === 'DETAILS' && !node.open
          && !(el.closest('summary') && el.closest('summary').parentElement === node)) return true;
      const r = node.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1) return true;
    }
    return false;
  };
  const clipped = (el) => {
    for (let node = el.parentElement; node && node !== main; node = node.parentElement) {
      if (getComputedStyle(node).overflowX !== 'visible') return true;
    }
    return false;
  };
  const ownText = (el) => [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE);
  const lines = (el) => {
    const tops = new Set();
    for (const node of ownText(el)) {
      const range = document.createRange();
      range.selectNodeContents(node);
      for (const rect of range.getClientRects()) if (rect.width > 0) tops.add(Math.round(rect.top));
    }
    return tops.size;
  };
  const narrow = [];
  const outside = [];
  const cut = [];
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('svg') || hidden(el)) continue;
    const r = el.getBoundingClientRect();
    const display = getComputedStyle(el).display;
    if (r.width < minWidth) {
      if (el.matches('td, th')) {
        if (el.textContent.trim()) narrow.push(describe(el));
      } else if (display !== 'inline' && display !== 'contents') {
        const own = ownText(el).map((n) => n.textContent).join('').trim();
        if (own.length > 2 && (lines(el) > 1 || el.scrollWidth > el.clientWidth + 1)) {
          narrow.push(describe(el));
        }
      }
    }
    if (r.right > window.innerWidth + 1 && !clipped(el)) outside.push(describe(el));
    const overflowX = getComputedStyle(el).overflowX;
    if (overflowX !== 'visible' && overflowX !== 'auto' && overflowX !== 'scroll'
        && el.textContent.trim() && el.scrollWidth > el.clientWidth + 1) cut.push(describe(el));
  }
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    narrow: narrow.slice(0, 40),
    outside: outside.slice(0, 40),
    cut: cut.slice(0, 40),
  };
}
"""


def _sign_in(page: Any, live_server: Any, user: User) -> None:
    client = Client()
    client.force_login(user)
    page.context.clear_cookies()
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )


# What a user reads (text, titles, labels) outside the image page's "Network details".
USER_TEXT_JS = """
() => {
  const copy = document.body.cloneNode(true);
  copy.querySelectorAll('details.network-details, script, template').forEach((n) => n.remove());
  const names = ['title', 'aria-label', 'alt', 'placeholder'];
  const attributes = [...copy.querySelectorAll('[title], [aria-label], [alt], [placeholder]')]
    .flatMap((n) => names.map((name) => n.getAttribute(name) || ''));
  return [copy.textContent, ...attributes].join(' ');
}
"""
NETWORK_MONEY = re.compile(r"\b(ETH|wei|gwei)\b", re.IGNORECASE)


Go = str | Callable[[Any], None]  # a URL to open, or the steps that open the page


def _visible(selector: str) -> Callable[[Any], None]:
    return lambda page: page.locator(selector).first.wait_for(state="visible")


def _check_layout(
    page: Any, go: Go, name: str, *, ready: Callable[[Any], None], staff: bool = False
) -> None:
    """Open the page at each width (``go``), wait until it is ``ready``, measure it, save
    its screenshot; fail with everything found at both widths."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for width, height in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        if isinstance(go, str):
            page.goto(go)
        else:
            go(page)
        ready(page)
        page.wait_for_timeout(200)  # let transitions settle before measuring
        found = page.evaluate(OFFENDERS_JS, MIN_TEXT_WIDTH)
        page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar lands mid-page
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        if found["scrollWidth"] > found["innerWidth"]:
            problems.append(
                f"{name} at {width}px scrolls sideways: "
                f"{found['scrollWidth']}px wide in a {found['innerWidth']}px window"
            )
        for kind, what in KINDS.items():
            problems += [f"{name} at {width}px, {what}: {item}" for item in found[kind]]
        if not staff:  # users read dollars; wei and ETH only inside "Network details"
            shown = NETWORK_MONEY.findall(page.evaluate(USER_TEXT_JS))
            if shown:
                problems.append(f"{name} at {width}px shows network money to a user: {shown}")
    assert not problems, "\n".join(problems)


def _customer(plans: dict[str, Plan]) -> User:
    user: User = UserFactory(email="phone.customer.with.a.long.address@example.com")
    account_change_plan(
        user=user, plan=plans["pay-as-you-go"], acting_user=None, reason="layout test"
    )
    return user


def _charged_generation(user: User, prompt: str) -> Generation:
    """A generation admitted (hold), paid (hold released, image charged)."""
    with transaction.atomic():
        generation = new_generation(user, prompt=prompt)
        admit_generation(generation)
    fee = 4_768_371_000_000
    Generation.objects.filter(pk=generation.pk).update(
        price_wei=fee, price_unit="fixed", units_paid=1, expected_fee_wei=fee,
        manifest_id=f"session-{generation.pk}", runner_url="http://127.0.0.1:9/runner",
    )  # fmt: skip
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=fee)
    return generation


def _succeed(generation: Generation) -> Generation:
    generation.image.save(f"{generation.pk}.png", ContentFile(_png(512, 512)), save=False)
    now = timezone.now()
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.SUCCEEDED, stage="done", image=generation.image.name,
        started_at=now, finished_at=now, image_seed=1234567890, seed=1234567890,
        cost_wei=4_768_371_000_000, cost_usd_micros=14_305,
    )  # fmt: skip
    return Generation.objects.get(pk=generation.pk)


@pytest.fixture
def customer_with_history(transactional_db: Any, sandbox: SandboxControl) -> Any:
    """A pay-as-you-go user with ~30 ledger entries: grants, holds, releases, charges,
    an open hold, and eight succeeded images (with their files)."""
    plans = {plan.slug: plan for plan in plans_seed()}
    user = _customer(plans)
    for index in range(12):
        grant(user, 2_500_000 + index * 1_234_567, key=f"layout-grant-{index}")
    prompts = [
        "A lighthouse on a cliff at dusk, volumetric light, oil painting",
        "Supercalifragilisticexpialidocious-neon-city-at-night-with-rain-and-reflections",
        "a fox",
    ]
    generations = [_charged_generation(user, prompts[index % 3]) for index in range(8)]
    with transaction.atomic():  # one still in progress: its hold stays open
        admit_generation(new_generation(user, prompt="a cat in a spacesuit, watercolor"))
    done = [_succeed(generation) for generation in generations]
    yield user, done[0]
    for generation in done:
        Path(generation.image.path).unlink(missing_ok=True)


def _images_loaded(page: Any) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gen-thumb img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )


def _detail_open(page: Any) -> None:
    page.wait_for_function("() => document.querySelector('.detail-image').naturalWidth > 0")
    page.locator("details.network-details summary").click()  # measured open: the widest
    assert page.locator("details.network-details").get_attribute("open") is not None


def _ledger_rows(page: Any) -> None:
    page.locator(".ledger-table").wait_for(state="visible")
    assert page.locator(".ledger-table [data-entry-id]").count() >= 20


def _four_plans(page: Any) -> None:
    page.locator("[data-plan='studio']").wait_for(state="visible")
    assert page.locator("[data-plan]").count() == 4


def _job(status: str, stage: str, **fields: Any) -> Callable[[User], Generation]:
    """A generation of ``user`` submitted 49 s ago, left in ``status`` at ``stage`` (no
    worker runs it); one that has finished ended a moment ago. An unfinished one was
    admitted, as every queued or running image is: it holds its most."""

    def make(user: User) -> Generation:
        generation = new_generation(
            user, prompt="A harbour at dawn, fishing boats, mist over the water, gouache"
        )
        if status in (GenerationStatus.QUEUED, GenerationStatus.RUNNING):
            with transaction.atomic():
                admit_generation(generation)
        now = timezone.now()
        times: dict[str, Any] = {"created_at": now - timedelta(seconds=49)}
        if status != GenerationStatus.QUEUED:
            times["started_at"] = now - timedelta(seconds=42)
        if status in (GenerationStatus.FAILED, GenerationStatus.CANCELED):
            times["finished_at"] = now
        Generation.objects.filter(pk=generation.pk).update(
            status=status, stage=stage, **times, **fields
        )
        return generation

    return make


# The job page in each state a person waits on or has to act on: queued (its place in
# the queue, Cancel), running (elapsed, stage, progress, Cancel), failed with a hint
# and canceled (Retry).
JOBS: dict[str, Callable[[User], Generation]] = {
    "job-queued": _job(GenerationStatus.QUEUED, GenerationStage.QUEUED),
    "job-running": _job(GenerationStatus.RUNNING, GenerationStage.GENERATING),
    "job-failed": _job(
        GenerationStatus.FAILED,
        GenerationStage.DONE,
        error_code=FailureCode.UPSTREAM_UNAVAILABLE,
        error_message=FAILURE_MESSAGES[FailureCode.UPSTREAM_UNAVAILABLE],
    ),
    "job-canceled": _job(
        GenerationStatus.CANCELED, GenerationStage.DONE, error_message=CANCELED_MESSAGE
    ),
}

# The pages of a user with history: (address, what shows the page is ready). ``{image}``
# is a succeeded image, ``{receipt}`` a grant's receipt, ``{job}`` a JOBS generation.
HISTORY_PAGES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "generate": ("/generate/", _visible("[data-quote]")),
    "detail": ("/generations/{image}/", _detail_open),
    "billing": ("/billing/", _ledger_rows),
    "receipt": ("/billing/receipts/{receipt}/", _visible("[data-receipt-number]")),
    "plans": ("/billing/plans/", _four_plans),
    "gallery": ("/gallery/", _images_loaded),
    "not-found": (
        "/generations/00000000-0000-0000-0000-000000000000/",
        _visible("[data-error-page='404']"),
    ),
    **{name: ("/generations/{job}/", _visible("[data-status-badge]")) for name in JOBS},
}


@pytest.mark.parametrize("name", HISTORY_PAGES)
def test_user_page_fits_a_phone_and_a_desktop(
    name: str,
    live_server,
    customer_with_history,
    browser_page,  # noqa: F811
) -> None:
    user, image = customer_with_history
    receipt = LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.GRANT).latest("pk")
    job = JOBS[name](user).pk if name in JOBS else None
    path, ready = HISTORY_PAGES[name]
    _sign_in(browser_page, live_server, user)
    url = live_server.url + path.format(image=image.pk, receipt=receipt.pk, job=job)
    _check_layout(browser_page, url, name, ready=ready)


@pytest.fixture
def low_balance_customer(transactional_db: Any, sandbox: SandboxControl) -> Any:
    """A pay-as-you-go user below $5: $0.50 purchased, $3.75 promotional expiring in a
    month, $0.50 promotional without expiry, one charged image."""
    plans = {plan.slug: plan for plan in plans_seed()}
    user = _customer(plans)
    grant(user, 500_000, key="layout-purchased")
    for key, amount, expires in (
        ("layout-welcome", 3_750_000, timezone.now() + timedelta(days=30)),
        ("layout-forever", 500_000, None),
    ):
        promotion_grant(
            user=user, amount_micros=amount, reason="Welcome credit for trying pixelhouse",
            acting_user=None, idempotency_key=key, expires_at=expires,
        )  # fmt: skip
    _charged_generation(user, "A lighthouse on a cliff at dusk, volumetric light, oil painting")
    return user


def test_low_balance_pages_fit_a_phone_and_a_desktop(
    live_server,
    low_balance_customer,
    browser_page,  # noqa: F811
) -> None:
    """The low-balance notice (with Add credit) on /generate/ and /billing/, and the
    promotional/purchased split on /billing/."""
    _sign_in(browser_page, live_server, low_balance_customer)
    _check_layout(
        browser_page,
        f"{live_server.url}/generate/",
        "generate-low-balance",
        ready=_visible("[data-add-credit]"),
    )
    _check_layout(
        browser_page,
        f"{live_server.url}/billing/",
        "billing-low-balance",
        ready=_visible("[data-credit-split]"),
    )
    assert browser_page.locator("[data-promotional-micros]").count() == 2
    assert browser_page.locator("[data-low-balance]").is_visible()


def _usage_row(ext: str, manifest: str, fee_wei: int, usd: int, requests: int) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": str(usd),
        "requests": requests,
    }


def test_staff_billing_fits_a_phone_and_a_desktop(
    live_server,
    sandbox: SandboxControl,
    transactional_db: Any,
    browser_page,  # noqa: F811
) -> None:
    staff = billing_staff(email="ops@example.com")
    customers = [
        UserFactory(email="alice@example.com"),
        UserFactory(email="a.very.long.customer.address.for.wrapping@subdomain.example.com"),
        UserFactory(email="bob@example.com"),
    ]
    sandbox.seed_usage(
        [
            _usage_row(customers[0].external_user_id, "a1", 10**30, 1_500_000, 2),
            _usage_row(customers[0].external_user_id, "a2", 10**30 + 1, 1, 1),
            _usage_row(customers[1].external_user_id, "b1", 2**256 - 1, 987_654_321_000, 17),
            _usage_row(customers[2].external_user_id, "c1", 4_768_371_000_000, 14_305, 1),
            _usage_row("unprovisioned-user-0123456789", "u1", 5, 3, 1),
            _usage_row("u-long", "m" * 201, 9, 3, 1),  # quarantined: an id too long
        ]
    )
    usage_sync_run()
    usage_sync_run()
    _sign_in(browser_page, live_server, staff)
    _check_layout(
        browser_page,
        f"{live_server.url}/staff/billing/",
        "staff-billing",
        ready=_visible(".usage-table"),
        staff=True,
    )
    assert browser_page.locator("[data-nav-staff-billing][aria-current=page]").count() == 1


def test_add_credit_page_fits_a_phone_and_a_desktop(
    live_server,
    customer_with_history,
    stripe_sandbox,
    browser_page,  # noqa: F811
) -> None:
    """Both states: a new card (localstripe's card element), then a saved card with the
    auto top-up settings."""
    user, _ = customer_with_history
    _sign_in(browser_page, live_server, user)
    url = f"{live_server.url}/billing/credit/"
    _check_layout(
        browser_page,
        url,
        "credit-new-card",
        ready=_visible("[data-card-element] input"),
    )
    card_save(user)
    _check_layout(
        browser_page,
        url,
        "credit-saved-card",
        ready=_visible("[data-saved-card]"),
    )


def test_plan_pay_page_fits_a_phone_and_a_desktop(
    live_server,
    customer_with_history,
    stripe_sandbox,
    browser_page,  # noqa: F811
) -> None:
    """Paying for Studio: a new card (the card element), then a saved card in one click."""
    user, _ = customer_with_history
    _sign_in(browser_page, live_server, user)
    url = f"{live_server.url}/billing/plans/studio/pay/"
    _check_layout(
        browser_page,
        url,
        "plan-pay-new-card",
        ready=_visible("[data-card-element] input"),
    )
    card_save(user)
    _check_layout(
        browser_page,
        url,
        "plan-pay-saved-card",
        ready=_visible("[data-saved-card]"),
    )
    assert browser_page.inner_text("[data-pay-submit]") == "Pay $29.00"


def test_api_page_fits_a_phone_and_a_desktop(
    live_server,
    sandbox: SandboxControl,
    transactional_db: Any,
    browser_page,  # noqa: F811
) -> None:
    """The list (a revoked, an expiring and a long-named key) and the page that shows a
    new key's secret once, with the curl example carrying it."""
    user: User = UserFactory(email="phone.customer.with.a.long.address@example.com")
    now = timezone.now()
    used = api_key_create(user=user, name="nightly batch", expires_at=None, acting_user=user)
    ApiKey.objects.filter(pk=used.api_key.pk).update(last_used_at=now - timedelta(minutes=5))
    api_key_create(
        user=user,
        name="A very long key name for the render farm in the basement, rack 7",
        expires_at=now + timedelta(days=30),
        acting_user=user,
    )
    old = api_key_create(user=user, name="old laptop", expires_at=None, acting_user=user)
    api_key_revoke(api_key=old.api_key, acting_user=user)
    endpoint = webhook_endpoint_set(
        user=user,
        url="https://hooks.example.com/pixelhouse/a-rather-long-path/for-the-render-farm",
        acting_user=user,
    ).endpoint
    for number, (status, code, error) in enumerate(
        [
            (WebhookDeliveryStatus.DELIVERED, 200, ""),
            (WebhookDeliveryStatus.PENDING, 503, "the receiver answered 503"),
            (
                WebhookDeliveryStatus.FAILED,
                None,
                "webhook to host hooks.example.com: ConnectTimeout",
            ),
        ]
    ):
        WebhookDelivery.objects.create(  # rows, not sends: nothing leaves the test
            endpoint=endpoint,
            event_id=f"evt_{number:032x}",
            event_type="generation.succeeded",
            subject_id=f"0000000{number}-1111-2222-3333-444444444444",
            body="{}",
            status=status,
            attempts=number + 1,
            response_status=code,
            last_error=error,
            next_attempt_at=now + timedelta(minutes=5),
        )
    _sign_in(browser_page, live_server, user)
    api_page = f"{live_server.url}/accounts/api/"
    _check_layout(browser_page, api_page, "api-keys", ready=_visible(".api-key-table"))

    def create_key(page: Any) -> None:
        page.goto(api_page)
        page.fill("#id_name", f"created at {page.viewport_size['width']}px")
        page.click("form.api-key-form button[type=submit]")

    _check_layout(browser_page, create_key, "api-key-created", ready=_visible("[data-new-secret]"))

    def rotate_webhook_secret(page: Any) -> None:
        page.goto(api_page)
        page.click("[data-webhooks] button:has-text('Rotate secret')")

    _check_layout(
        browser_page,
        rotate_webhook_secret,
        "api-webhook-secret",
        ready=_visible("[data-new-webhook-secret]"),
    )


@pytest.mark.parametrize(
    ("path", "name", "status"),
    [(FAILING_PATH, "server-error", "500"), (DATABASE_DOWN_PATH, "service-unavailable", "503")],
)
def test_error_pages_fit_a_phone_and_a_desktop(
    live_server,
    transactional_db: Any,
    sandbox: SandboxControl,  # signing up provisions the user at pymthouse
    browser_page,  # noqa: F811
    settings: Any,
    path: str,
    name: str,
    status: str,
) -> None:
    """config.errors renders templates/500.html (a bug) and templates/503.html (the
    database unreachable) with no request context: a signed-in user sees no "Sign in"
    (the page cannot know who is signed in, so no account links)."""
    settings.ROOT_URLCONF = "tests.browser.failing_urls"
    _sign_in(browser_page, live_server, UserFactory(email="phone.customer@example.com"))
    _check_layout(
        browser_page,
        f"{live_server.url}/{path}",
        name,
        ready=_visible(f"[data-error-page='{status}']"),
    )
    assert browser_page.locator("header >> text=Sign in").count() == 0


def test_merchant_pages_fit_a_phone_and_a_desktop(
    live_server,
    transactional_db: Any,
    sandbox: SandboxControl,
    browser_page,  # noqa: F811
    settings: Any,
) -> None:
    """Merchant mode as the README runs it (`BILLING_MODE=merchant`, the sandbox a
    merchant app with billing on and Connect ready): Add credit, the return page while
    it waits, once it says "still processing" and once credited, a cancelled checkout,
    the billing page, pymthouse's plans (one chosen), invoices and saved cards."""
    settings.BILLING_MODE = "merchant"
    settings.BILLING_WALLET_MAX_AGE_SECONDS = 0
    settings.BILLING_TOPUP_CONFIRM_SECONDS = 3600  # the return page keeps waiting
    sandbox.set_billing(
        billingMode="merchant", billingEnabled=True, connectReady=True, creditDelaySeconds=3600
    )
    studio = sandbox.add_plan(
        "Studio", type="subscription", priceUsdMicros="29000000", includedUsdMicros="20000000"
    )
    sandbox.add_plan("Hobby", type="subscription", priceUsdMicros="9000000")
    sandbox.add_plan("Pay as you go", type="usage")
    user: User = UserFactory(email="phone.customer.with.a.long.address@example.com")
    _sign_in(browser_page, live_server, user)
    page = browser_page
    credit_url = f"{live_server.url}/billing/credit/"

    def pay(amount: str) -> str:
        """Add credit → pymthouse's (the sandbox's) checkout → Pay: the return page's URL."""
        page.goto(credit_url)
        page.fill("[data-custom-amount]", amount)
        with page.expect_navigation():
            page.click("[data-pay]")
        assert page.url.startswith(sandbox.url + "/checkout/")
        with page.expect_navigation():
            page.click("#pay")
        assert page.url.startswith(credit_url)
        return str(page.url)

    late = pay("12.50")  # Stripe's webhook is late: the credit has not landed
    _check_layout(page, late, "merchant-credit-waiting", ready=_visible("[data-top-up-waiting]"))
    settings.BILLING_TOPUP_CONFIRM_SECONDS = 1
    page.wait_for_timeout(1100)
    _check_layout(
        page, late, "merchant-credit-processing", ready=_visible("[data-top-up-processing]")
    )

    sandbox.set_billing(creditDelaySeconds=0)
    settings.BILLING_TOPUP_CONFIRM_SECONDS = 60
    credited = pay("25.00")
    _check_layout(
        page, credited, "merchant-credit-credited", ready=_visible("[data-top-up-credited]")
    )
    assert page.inner_text("[data-top-up-available]") == "$25.00"

    page.goto(credit_url)  # leave the checkout without paying
    with page.expect_navigation():
        page.click("[data-pay]")
    left = PendingTopUp.objects.get(amount_micros=10_000_000, status=TopUpStatus.PENDING)
    _check_layout(
        page,
        f"{live_server.url}/billing/credit/{left.pk}/cancelled/",
        "merchant-credit-cancelled",
        ready=_visible("[data-top-up-cancelled]"),
    )

    _check_layout(page, credit_url, "merchant-credit", ready=_visible("[data-top-up-form]"))

    sandbox.billing_customer(user.external_user_id, card=True)
    page.goto(f"{live_server.url}/billing/plans/")
    with page.expect_navigation():
        page.click(f"[data-plan='{studio['id']}'] [data-plan-choose]")
    _check_layout(
        page,
        f"{live_server.url}/billing/plans/",
        "merchant-plans",
        ready=_visible("[data-current-plan]"),
    )
    assert "Your plan: Studio" in page.inner_text("[data-current-plan]")
    assert page.locator("[data-plan] h2").all_inner_texts() == [
        "Starter",
        "Studio",
        "Hobby",
        "Pay as you go",
    ]  # pymthouse's own Starter by its name, never its key "__pymthouse_starter__"
    _check_layout(
        page,
        f"{live_server.url}/billing/",
        "merchant-billing",
        ready=_visible("[data-available-micros]"),
    )
    _check_layout(
        page,
        f"{live_server.url}/billing/invoices/",
        "merchant-invoices",
        ready=_visible("[data-invoice]"),
    )
    _check_layout(
        page, f"{live_server.url}/billing/cards/", "merchant-cards", ready=_visible("[data-card]")
    )
