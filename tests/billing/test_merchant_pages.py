"""Merchant mode's pages against the sandbox standing in for pymthouse (real HTTP):
Add credit → pymthouse checkout → return page, cancel, plans, invoices, cards, and every
refusal the real server gives (pymthouse-billing transcript T#n; docs/upstream.md)."""

from __future__ import annotations

import logging
import time
import urllib.request
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from billing.models import EntryKind, LedgerEntry, MerchantWallet, PendingTopUp, TopUpStatus
from tests.billing.conftest import account_of, assert_ledger_matches
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

KEY = "0123456789abcdef0123456789abcdef"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def pay_at_checkout(checkout_url: str) -> str:
    """Press Pay (or Save card) on the sandbox's checkout page; the success URL it sends
    the browser to (not followed)."""
    request = urllib.request.Request(checkout_url, data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as redirected:
        _OPENER.open(request, timeout=10)
    assert redirected.value.code == 303
    return str(redirected.value.headers["Location"])


@pytest.fixture(autouse=True)
def merchant(settings: Any) -> None:
    settings.BILLING_MODE = "merchant"
    settings.BILLING_WALLET_MAX_AGE_SECONDS = 0


@pytest.fixture
def merchant_sandbox(sandbox: SandboxControl) -> SandboxControl:
    """pymthouse with OpenMeter and Stripe, the app in merchant mode, Connect ready,
    credit landing as soon as the checkout is paid."""
    sandbox.set_billing(
        billingMode="merchant", billingEnabled=True, connectReady=True, creditDelaySeconds=0
    )
    return sandbox


@pytest.fixture
def user(make_user: Any, plans: Any) -> User:
    user: User = make_user()
    return user


@pytest.fixture
def browser(user: User) -> Client:
    # pymthouse keeps http return URLs only on loopback names (``checkout`` route).
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def top_up(browser: Client, amount: str = "25", key: str = KEY) -> Any:
    return browser.post(reverse("billing:credit_add"), {"amount": amount, "idempotency_key": key})


def entries(user: User) -> list[tuple[str, int]]:
    return [
        (e.kind, e.amount_micros)
        for e in LedgerEntry.objects.filter(account_id=user.pk).order_by("pk")
    ]


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_add_credit_pay_and_return_credits_once(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    page = browser.get(reverse("billing:credit_add"))
    assert page.status_code == 200
    assert b'data-available-micros="0"' in page.content

    started = top_up(browser)
    again = top_up(browser)  # the same click submitted twice: the same checkout
    assert started.status_code == again.status_code == 302
    assert started["Location"] == again["Location"]
    top_up_row = PendingTopUp.objects.get()
    assert (top_up_row.amount_micros, top_up_row.status, top_up_row.click_key) == (
        25_000_000,
        TopUpStatus.PENDING,
        KEY,
    )
    assert top_up_row.session_id.startswith("cs_")
    assert started["Location"] == top_up_row.checkout_url
    assert len(merchant_sandbox.billing()["sessions"]) == 1
    assert entries(user) == []  # nothing is credited before pymthouse says so

    back = pay_at_checkout(top_up_row.checkout_url)
    assert back == "http://localhost" + reverse("billing:credit_return", args=[top_up_row.pk])
    returned = browser.get(back)
    assert returned.status_code == 200
    assert b"was added to your balance" in returned.content
    for _ in range(3):  # every later poll changes nothing
        status = browser.get(reverse("billing:credit_status", args=[top_up_row.pk])).json()
        assert status == {
            "state": "credited",
            "amount": "$25.00",
            "available": "$25.00",
            "available_micros": "25000000",
        }
    assert entries(user) == [(EntryKind.WALLET_CREDIT, 25_000_000)]
    assert PendingTopUp.objects.get().status == TopUpStatus.CREDITED
    assert PendingTopUp.objects.count() == 1
    assert len(merchant_sandbox.billing()["sessions"]) == 1  # no second purchase
    assert_ledger_matches(user)
    dashboard = browser.get(reverse("billing:dashboard"))
    assert b'data-available-micros="25000000"' in dashboard.content
    assert f'href="{reverse("billing:credit_add")}"'.encode() in dashboard.content


def test_the_return_page_polls_a_bounded_time_then_says_still_processing(
    browser: Client, user: User, merchant_sandbox: SandboxControl, settings: Any
) -> None:
    settings.BILLING_TOPUP_CONFIRM_SECONDS = 1
    merchant_sandbox.set_billing(creditDelaySeconds=30)  # Stripe's webhook is late
    top_up_row_url = top_up(browser, amount="10.50")["Location"]
    top_up_row = PendingTopUp.objects.get()
    assert top_up_row.checkout_url == top_up_row_url
    pay_at_checkout(top_up_row.checkout_url)

    url = reverse("billing:credit_status", args=[top_up_row.pk])
    assert browser.get(url).json()["state"] == "waiting"
    time.sleep(1.2)
    assert browser.get(url).json()["state"] == "processing"
    page = browser.get(reverse("billing:credit_return", args=[top_up_row.pk]))
    assert b"still processing" in page.content
    assert b"you don't need to pay again" in page.content
    assert entries(user) == []
    assert PendingTopUp.objects.count() == 1
    assert len(merchant_sandbox.billing()["sessions"]) == 1


def test_cancelled_checkout_says_nothing_was_charged(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    top_up(browser)
    top_up_row = PendingTopUp.objects.get()
    page = browser.get(reverse("billing:credit_cancelled", args=[top_up_row.pk]))
    assert page.status_code == 200
    assert b"Nothing was charged." in page.content
    assert PendingTopUp.objects.get().status == TopUpStatus.CANCELLED
    assert entries(user) == []


def test_another_users_top_up_is_not_found(
    browser: Client, make_user: Any, merchant_sandbox: SandboxControl
) -> None:
    top_up(browser)
    stranger = Client(HTTP_HOST="localhost")
    stranger.force_login(make_user())
    top_up_row = PendingTopUp.objects.get()
    assert stranger.get(reverse("billing:credit_status", args=[top_up_row.pk])).status_code == 404
    assert (
        stranger.get(reverse("billing:credit_cancelled", args=[top_up_row.pk])).status_code == 404
    )
    assert PendingTopUp.objects.get().status == TopUpStatus.PENDING


@pytest.mark.parametrize("amount", ["0.50", "10000.01", "12.345", "ten"])
def test_amounts_outside_pymthouses_limits_are_refused_before_any_call(
    browser: Client, merchant_sandbox: SandboxControl, amount: str
) -> None:
    response = top_up(browser, amount=amount)
    assert response.status_code == 400
    assert PendingTopUp.objects.count() == 0
    assert merchant_sandbox.billing()["sessions"] == []


# --- refusals the real server gives: user message, staff log, nothing recorded -------


def _refused_top_up(browser: Client, caplog: Any) -> str:
    with caplog.at_level(logging.ERROR, logger="billing.merchant_errors"):
        response = top_up(browser)
    assert response.status_code == 302
    assert response["Location"] == reverse("billing:credit_add")
    page = browser.get(response["Location"])
    shown = messages_of(page)
    assert len(shown) == 1
    assert PendingTopUp.objects.count() == 0
    return shown[0]


def test_top_up_without_openmeter_is_503(
    browser: Client, user: User, sandbox: SandboxControl, caplog: Any
) -> None:
    # T#21/T#22: the local server has no OpenMeter/Stripe (merchant app, Connect ready).
    sandbox.set_billing(billingMode="merchant", billingEnabled=False, connectReady=True)
    shown = _refused_top_up(browser, caplog)
    assert (
        shown == "Payments are unavailable right now. Nothing was charged. Please try again later."
    )
    assert "503, billing is not configured on the pymthouse deployment" in caplog.text
    assert entries(user) == []
    assert sandbox.billing()["sessions"] == []
    wallet = MerchantWallet.objects.get(account_id=user.pk)
    assert (wallet.can_spend, wallet.reason) == (False, "billing_unavailable")


def test_top_up_with_connect_not_ready_is_409(
    browser: Client, user: User, sandbox: SandboxControl, caplog: Any
) -> None:
    # T#98: merchant app whose Stripe Connected Account is not onboarded.
    sandbox.set_billing(billingMode="merchant", billingEnabled=True, connectReady=False)
    shown = _refused_top_up(browser, caplog)
    assert shown == "Payments are not set up for this service yet. Nothing was charged."
    assert "409, the app's Stripe Connect account is not ready" in caplog.text
    assert "Stripe Connect" in MerchantWallet.objects.get(account_id=user.pk).last_error
    assert entries(user) == []
    assert sandbox.billing()["sessions"] == []


def test_top_up_against_an_owner_rollup_app_is_refused(
    browser: Client, user: User, sandbox: SandboxControl, caplog: Any
) -> None:
    # T#12/T#13: owner_rollup answers the wallet with the owner's subject; a top-up there
    # would fund the operator's shared wallet, so none is started.
    sandbox.set_billing(billingMode="owner_rollup", billingEnabled=True, connectReady=True)
    shown = _refused_top_up(browser, caplog)
    assert shown == "Payments are not available for this service. Nothing was charged."
    assert "not in merchant mode while BILLING_MODE=merchant" in caplog.text
    assert entries(user) == []
    assert sandbox.billing()["sessions"] == []


def test_plan_change_against_an_owner_rollup_app_is_400(
    browser: Client, user: User, sandbox: SandboxControl, caplog: Any
) -> None:
    # T#44: end-user plan change on an owner_rollup app → 400 owner_wallet_not_app_user.
    sandbox.set_billing(billingMode="owner_rollup", billingEnabled=True, connectReady=True)
    plan = sandbox.add_plan("Pro", type="subscription", priceUsdMicros="9000000")
    with caplog.at_level(logging.ERROR, logger="billing.merchant_errors"):
        response = browser.post(reverse("billing:merchant_plan_change"), {"plan": plan["id"]})
    assert response["Location"] == reverse("billing:plans")
    assert messages_of(browser.get(reverse("billing:plans"))) == [
        "Payments are not available for this service. Nothing was charged."
    ]
    assert "400 owner_wallet_not_app_user" in caplog.text
    assert entries(user) == []


def test_bad_credentials_are_404(
    browser: Client, user: User, merchant_sandbox: SandboxControl, caplog: Any, settings: Any
) -> None:
    # T#3–T#7: every auth failure on the billing routes is 404 {"error":"Not found"}.
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_wrong"
    shown = _refused_top_up(browser, caplog)
    assert (
        shown == "Payments are unavailable right now. Nothing was charged. Please try again later."
    )
    assert "pymthouse refused our credentials" in caplog.text
    assert "pmth_cs_wrong" not in caplog.text
    assert entries(user) == []
    assert merchant_sandbox.billing()["sessions"] == []


# --- plans, invoices, cards -----------------------------------------------------------


def test_change_plan_without_a_card_goes_through_setup_then_changes(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    plan = merchant_sandbox.add_plan("Pro", type="subscription", priceUsdMicros="9000000")
    listed = browser.get(reverse("billing:plans"))
    assert f'data-plan="{plan["id"]}"'.encode() in listed.content
    assert b"__pymthouse_network_default__" not in listed.content

    chosen = browser.post(reverse("billing:merchant_plan_change"), {"plan": plan["id"]})
    assert chosen.status_code == 302
    setup_url = chosen["Location"]
    assert "/checkout/" in setup_url  # a setup-mode checkout: nothing changed yet
    customer = merchant_sandbox.billing_customer(user.external_user_id)
    assert customer["planId"] != plan["id"]
    assert customer["defaultPaymentMethod"] is None

    back = pay_at_checkout(setup_url)  # "Save card"
    assert back.startswith("http://localhost" + reverse("billing:merchant_plan_return"))
    done = browser.get(back.removeprefix("http://localhost"))
    assert done["Location"] == reverse("billing:plans")
    page = browser.get(reverse("billing:plans"))
    assert messages_of(page) == ["Your plan has changed."]
    assert b"Your plan: Pro" in page.content
    assert entries(user) == []  # pymthouse invoices the fee; the ledger moves nothing
    assert merchant_sandbox.billing_customer(user.external_user_id)["planId"] == plan["id"]

    cancelled = browser.post(reverse("billing:plan_cancel"))
    page = browser.get(cancelled["Location"])
    assert messages_of(page)[0].startswith("Your plan is cancelled from ")
    assert b"data-plan-resume" in page.content
    resumed = browser.post(reverse("billing:plan_resume"))
    page = browser.get(resumed["Location"])
    assert messages_of(page) == ["Your plan continues; the cancellation is undone."]

    cards = browser.get(reverse("billing:cards"))
    assert b"(default)" in cards.content


def test_invoices_list_the_top_up_and_link_to_it(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    top_up(browser)
    pay_at_checkout(PendingTopUp.objects.get().checkout_url)
    page = browser.get(reverse("billing:invoices"))
    assert page.status_code == 200
    assert b"$25.00" in page.content
    invoice_id = page.content.split(b'data-invoice="')[1].split(b'"')[0].decode()
    link = browser.get(reverse("billing:invoice_link", args=[invoice_id]))
    assert link["Location"] == f"{merchant_sandbox.url}/checkout/invoices/{invoice_id}"
    missing = browser.get(reverse("billing:invoice_link", args=["in_nope"]))
    assert missing["Location"] == reverse("billing:invoices")


def test_merchant_pages_do_not_exist_in_owner_rollup(browser: Client, settings: Any) -> None:
    settings.BILLING_MODE = "owner_rollup"
    for name in ("billing:invoices", "billing:cards", "billing:merchant_plan_return"):
        assert browser.get(reverse(name)).status_code == 404
    # The plans page is owner_rollup's own there (billing/views_plans.py).
    assert b"data-plan-choose" not in browser.get(reverse("billing:plans")).content


def test_generate_refuses_an_empty_wallet_with_add_credit_then_admits(
    browser: Client,
    user: User,
    merchant_sandbox: SandboxControl,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from inference.services import generation_create

    page = browser.get(reverse("inference:generate"))
    assert b"Add credit to keep generating." in page.content
    assert reverse("billing:credit_add").encode() in page.content

    top_up(browser)
    pay_at_checkout(PendingTopUp.objects.get().checkout_url)
    generation = generation_create(
        owner=user, prompt="a lighthouse", width=512, height=512, enqueue=False
    )
    account = account_of(user)
    assert account.balance_micros == 25_000_000
    assert account.held_micros == 15_000  # the ceiling in USD, no plan multiplier
    assert generation.max_fee_wei == 5_000_000_000_000


def test_a_fresh_copy_is_not_read_again_before_admission(
    user: User, merchant_sandbox: SandboxControl, settings: Any
) -> None:
    from billing.services import wallet_refresh_if_stale

    settings.BILLING_WALLET_MAX_AGE_SECONDS = 60
    wallet_refresh_if_stale(user_id=user.pk)
    merchant_sandbox.billing_customer(user.external_user_id, prepaidUsdMicros="3000000")
    wallet_refresh_if_stale(user_id=user.pk)
    assert entries(user) == []  # younger than 60 s: pymthouse was not asked

    settings.BILLING_WALLET_MAX_AGE_SECONDS = 0
    wallet_refresh_if_stale(user_id=user.pk)
    assert entries(user) == [(EntryKind.WALLET_CREDIT, 3_000_000)]


def test_the_beat_task_mirrors_pending_top_ups_and_nothing_in_owner_rollup(
    browser: Client, user: User, merchant_sandbox: SandboxControl, settings: Any
) -> None:
    from billing.tasks import merchant_wallets_refresh_task

    top_up(browser, amount="5")
    pay_at_checkout(PendingTopUp.objects.get().checkout_url)
    settings.BILLING_MODE = "owner_rollup"
    assert merchant_wallets_refresh_task.delay().get() == 0
    assert entries(user) == []

    settings.BILLING_MODE = "merchant"
    assert merchant_wallets_refresh_task.delay().get() == 1
    assert entries(user) == [(EntryKind.WALLET_CREDIT, 5_000_000)]
    assert PendingTopUp.objects.get().status == TopUpStatus.CREDITED


def test_staff_see_wallets_in_the_admin(
    user: User, merchant_sandbox: SandboxControl, make_user: Any
) -> None:
    from billing.services import wallet_refresh_if_stale

    wallet_refresh_if_stale(user_id=user.pk)
    staff = make_user(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:billing_merchantwallet_changelist"))
    assert page.status_code == 200
    assert user.email.encode() in page.content or str(user.pk).encode() in page.content


@pytest.mark.django_db(transaction=True)
def test_concurrent_polls_credit_a_top_up_once(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    import threading

    from django.db import connection

    from billing.services.merchant import top_up_progress

    top_up(browser)
    top_up_row = PendingTopUp.objects.get()
    pay_at_checkout(top_up_row.checkout_url)
    barrier = threading.Barrier(8)
    states: list[str] = []
    lock = threading.Lock()

    def poll() -> None:
        try:
            barrier.wait()
            progress = top_up_progress(user=user, top_up_id=top_up_row.pk)
            state = progress.state if progress is not None else "missing"
        except Exception as exc:  # reported in the assertion below
            state = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            states.append(state)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == ["credited"] * 8
    assert entries(user) == [(EntryKind.WALLET_CREDIT, 25_000_000)]
    assert_ledger_matches(user)


def test_two_open_checkouts_are_not_both_credited_by_the_first_payment(
    browser: Client, user: User, merchant_sandbox: SandboxControl
) -> None:
    top_up(browser, amount="10", key="a" * 32)
    top_up(browser, amount="10", key="b" * 32)
    first, second = PendingTopUp.objects.order_by("created_at")
    pay_at_checkout(second.checkout_url)  # either one landing covers one of them

    browser.get(reverse("billing:credit_status", args=[first.pk]))
    assert sorted(PendingTopUp.objects.values_list("status", flat=True)) == [
        TopUpStatus.CREDITED,
        TopUpStatus.PENDING,
    ]
    pay_at_checkout(first.checkout_url)
    browser.get(reverse("billing:credit_status", args=[second.pk]))
    assert set(PendingTopUp.objects.values_list("status", flat=True)) == {TopUpStatus.CREDITED}
    assert entries(user) == [(EntryKind.WALLET_CREDIT, 10_000_000)] * 2


def test_local_plan_choice_does_not_exist_in_merchant_mode(browser: Client) -> None:
    assert browser.post(reverse("billing:plan_choose", args=["studio"])).status_code == 404
    assert browser.get(reverse("billing:plan_pay", args=["studio"])).status_code == 404
