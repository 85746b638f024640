"""The user's billing page, CSV export, image charge, and the staff admin."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.db import transaction
from django.test import Client

from accounts.models import User
from billing.models import Account, EntryKind, Hold, LedgerEntry, Plan
from billing.money import format_usd
from inference.models import Generation
from tests.billing.conftest import admit_generation, charge_at_payment, grant, new_generation
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db
MAX = 2**256 - 1
BIG = [10**30, 10**30 + 1, MAX]


@pytest.fixture
def staff(make_user: Callable[..., User]) -> User:
    return make_user(email="ops@example.com", is_staff=True, is_superuser=True)


def staff_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (12_345_678, "$12.34"),  # a balance is rounded down to the cent
        (5_000_000, "$5.00"),
        (4_200, "$0.0042"),  # below a cent: its significant micros
        (10**30 + 1, "$1,000,000,000,000,000,000,000,000.00"),  # $10**24, to the cent
    ],
)
def test_dashboard_shows_balances_in_dollars_and_never_eth(
    usage_user: User, client: Client, amount: int, shown: str
) -> None:
    grant(usage_user, amount)
    client.force_login(usage_user)
    page = client.get("/billing/").content.decode()
    assert f'data-balance-micros="{amount}"' in page
    assert f'data-available-micros="{amount}"' in page
    assert f">{shown}</p>" in page
    main = page.split("<main")[1]
    assert "ETH" not in main
    assert "wei" not in main
    assert "e+" not in page.lower().replace("e+0", "")  # no float notation anywhere


def test_dashboard_activity_and_image_page_show_the_charge_in_dollars(
    usage_user: User, client: Client
) -> None:
    grant(usage_user, 5_000_000)
    generation = new_generation(usage_user, prompt="a lighthouse at dusk")
    with transaction.atomic():
        admit_generation(generation)
    Generation.objects.filter(pk=generation.pk).update(
        price_wei=4_768_371_000_000, price_unit="fixed", units_paid=1,
        expected_fee_wei=4_768_371_000_000,
    )  # fmt: skip
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=4_768_371_000_000)
    entry = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert entry.amount_micros == 17_167  # $0.014305113 × 6/5, rounded up to the micro
    client.force_login(usage_user)
    page = client.get("/billing/").content.decode()
    assert f'href="/generations/{generation.pk}/"' in page
    assert 'data-amount-micros="17167">−$0.02</td>' in page
    assert "Image charge" in page
    assert "“a lighthouse at dusk” (SDXL-Lightning)" in page  # the reason in words
    assert str(generation.pk) not in page.split("Account activity")[1].replace(
        f"/generations/{generation.pk}/", ""
    )  # no raw ids in what the user reads
    assert '<svg class="chart"' in page
    assert "<script" not in page.split("<main")[1]  # the chart is plain SVG
    detail = client.get(f"/generations/{generation.pk}/").content.decode()
    assert 'data-charge-micros="17167">$0.02</span>' in detail
    # wei and the rate only inside "Network details"
    before, network = detail.split('<details class="network-details">')
    assert "wei" not in before.split("<main")[1]
    assert "4,768,371,000,000 wei" in network
    assert 'data-testid="eth-usd-rate">3000</span> USD/ETH' in network


def test_activity_pages_through_the_whole_ledger(usage_user: User, client: Client) -> None:
    for index in range(30):
        grant(usage_user, 1_000_000, key=f"g{index}")
    client.force_login(usage_user)
    first = client.get("/billing/").content.decode()
    assert first.count("data-entry-id=") == 25
    assert "Page 1 of 2" in first
    second = client.get("/billing/?page=2").content.decode()
    assert second.count("data-entry-id=") == 5
    assert 'rel="prev"' in second


def test_image_page_says_nothing_charged_without_a_debit(usage_user: User, client: Client) -> None:
    generation = new_generation(usage_user)
    client.force_login(usage_user)
    detail = client.get(f"/generations/{generation.pk}/").content.decode()
    assert "Nothing charged" in detail
    assert "data-charge-micros" not in detail


def test_image_page_shows_the_hold_until_the_charge(usage_user: User, client: Client) -> None:
    """Between admission (or the network payment) and the charge, the page says what is
    held, in dollars; once charged, the charge replaces it."""
    grant(usage_user, 1_000_000)
    generation = new_generation(usage_user)
    admit_generation(generation)
    held = int(Hold.objects.get(generation_id=generation.pk).amount_micros)
    client.force_login(usage_user)

    detail = client.get(f"/generations/{generation.pk}/").content.decode()

    assert f'data-held-micros="{held}"' in detail
    assert f"Nothing yet; up to {format_usd(held)} held" in detail
    assert "data-charge-micros" not in detail
    assert "wei" not in detail.split("Network details")[0]

    charge_at_payment(generation_id=generation.pk, expected_fee_wei=4_768_371_000_000)
    detail = client.get(f"/generations/{generation.pk}/").content.decode()
    assert "data-held-micros" not in detail
    assert "data-charge-micros" in detail


def test_low_balance_notice_appears_at_the_threshold(usage_user: User, client: Client) -> None:
    low = int(settings.BILLING_LOW_BALANCE_THRESHOLDS_MICROS[0])
    grant(usage_user, low + 1)
    client.force_login(usage_user)
    assert "data-low-balance" not in client.get("/billing/").content.decode()
    grant(usage_user, 0, key="nudge")  # nothing changes
    Account.objects.filter(pk=usage_user.pk).update(balance_micros=low)
    assert "data-low-balance" in client.get("/billing/").content.decode()


def test_free_plan_dashboard_shows_the_allowance(
    make_user: Callable[..., User], plans: dict[str, Plan], client: Client
) -> None:
    user = make_user()
    admit_generation(new_generation(user))  # the allowance counts admitted images
    client.force_login(user)
    page = client.get("/billing/").content.decode()
    assert 'data-allowance-used="1"' in page
    assert "19 left this month" in page


def test_csv_export_has_plain_digits_and_only_the_users_rows(
    usage_user: User, make_user: Callable[..., User], client: Client
) -> None:
    other = make_user()
    amounts = [10**30, 10**30 + 1, MAX - 2 * 10**30 - 1]  # sums to exactly 2**256 - 1
    for amount in amounts:
        grant(usage_user, amount, key=str(amount))
    grant(other, 7, key="other")
    client.force_login(usage_user)
    response = client.get("/billing/ledger.csv")
    assert response["Content-Type"] == "text/csv"
    body = b"".join(response.streaming_content).decode()
    assert "E+" not in body
    assert "e+" not in body
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(int(row["amount_micros"]) for row in rows) == sorted(amounts)
    assert int(rows[0]["balance_after_micros"]) == MAX
    assert all(re.fullmatch(r"[0-9]+", row["amount_micros"]) for row in rows)


def test_csv_neutralises_formula_reasons(usage_user: User, client: Client) -> None:
    from billing.services import credit_grant

    credit_grant(
        user=usage_user, amount_micros=1, reason="=HYPERLINK(1)", acting_user=None,
        idempotency_key="f",
    )  # fmt: skip
    client.force_login(usage_user)
    body = b"".join(client.get("/billing/ledger.csv").streaming_content).decode()
    assert "'=HYPERLINK(1)" in body


def test_billing_pages_need_a_login(client: Client) -> None:
    assert client.get("/billing/").status_code == 302
    assert client.get("/billing/ledger.csv").status_code == 302


# --- admin ---------------------------------------------------------------------------


def _credit_form(client: Client, account_pk: int) -> str:
    page = client.get(f"/admin/billing/account/{account_pk}/credit/").content.decode()
    match = re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', page)
    assert match
    return match.group(1)


@pytest.mark.parametrize(
    ("typed", "micros"),
    [("12.50", 12_500_000), ("$0.25", 250_000), (" 5 ", 5_000_000), ("0.000001", 1)],
)
def test_admin_grant_takes_dollars_and_a_double_submit_grants_once(
    usage_user: User, staff: User, typed: str, micros: int
) -> None:
    client = staff_client(staff)
    key = _credit_form(client, usage_user.pk)
    form = {"operation": "grant", "amount_micros": typed, "reason": "goodwill",
            "idempotency_key": key}  # fmt: skip
    for _ in range(2):
        response = client.post(f"/admin/billing/account/{usage_user.pk}/credit/", form)
        assert response.status_code == 302
    entry = LedgerEntry.objects.get()
    assert (entry.amount_micros, entry.actor_id, entry.reason) == (micros, staff.pk, "goodwill")
    assert Account.objects.get(pk=usage_user.pk).balance_micros == micros
    # The second submit replays the first: one ledger entry, one history row.
    assert LogEntry.objects.filter(user=staff, object_id=str(usage_user.pk)).count() == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1e30", "Enter an amount in dollars"),
        ("１２３", "Enter an amount in dollars"),
        ("1_000", "Enter an amount in dollars"),
        ("1,000", "Enter an amount in dollars"),
        ("-5", "Enter an amount in dollars"),
        ("1.5.0", "Enter an amount in dollars"),
        ("0.0000001", "six decimal places"),
        ("100000.01", "too large: at most $100,000.00"),
        ("", "This field is required"),
        ("0", "above zero"),
    ],
)
def test_admin_rejects_bad_amounts_without_writing(
    usage_user: User, staff: User, bad: str, message: str
) -> None:
    client = staff_client(staff)
    key = _credit_form(client, usage_user.pk)
    response = client.post(
        f"/admin/billing/account/{usage_user.pk}/credit/",
        {"operation": "grant", "amount_micros": bad, "reason": "x", "idempotency_key": key},
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "errorlist" in body
    assert message in body
    assert not LedgerEntry.objects.exists()
    assert Account.objects.get(pk=usage_user.pk).balance_micros == 0
    assert not LogEntry.objects.exists()


def test_admin_requires_a_reason_and_refuses_overdrafts(usage_user: User, staff: User) -> None:
    client = staff_client(staff)
    url = f"/admin/billing/account/{usage_user.pk}/credit/"
    no_reason = {"operation": "grant", "amount_micros": "5.00", "reason": "",
                 "idempotency_key": _credit_form(client, usage_user.pk)}  # fmt: skip
    assert client.post(url, no_reason).status_code == 200
    overdraft = {"operation": "deduct", "amount_micros": "5.00", "reason": "oops",
                 "idempotency_key": _credit_form(client, usage_user.pk)}  # fmt: skip
    response = client.post(url, overdraft)
    assert response.status_code == 200
    assert "Not enough available credit" in response.content.decode()
    assert not LedgerEntry.objects.exists()


def test_admin_changes_plan_and_suspends_with_history(
    usage_user: User, staff: User, plans: dict[str, Plan]
) -> None:
    client = staff_client(staff)
    response = client.post(
        f"/admin/billing/account/{usage_user.pk}/plan/",
        {"plan": plans["free"].pk, "reason": "downgrade"},
    )
    assert response.status_code == 302
    account = Account.objects.get(pk=usage_user.pk)
    assert account.plan.slug == "free"
    history = list(account.plan_history.values_list("plan__slug", "actor_id", "ended_at"))
    assert history[0][:2] == ("free", staff.pk)
    assert history[0][2] is None
    assert all(ended is not None for _, _, ended in history[1:])
    assert (
        client.post(
            f"/admin/billing/account/{usage_user.pk}/suspend/", {"suspended": "on", "reason": ""}
        ).status_code
        == 200
    )  # reason required
    assert not Account.objects.get(pk=usage_user.pk).suspended
    client.post(
        f"/admin/billing/account/{usage_user.pk}/suspend/", {"suspended": "on", "reason": "fraud"}
    )
    assert Account.objects.get(pk=usage_user.pk).suspended_reason == "fraud"


def test_admin_ledger_is_read_only(usage_user: User, staff: User) -> None:
    grant(usage_user, 5)
    entry = LedgerEntry.objects.get()
    client = staff_client(staff)
    assert client.get("/admin/billing/ledgerentry/").status_code == 200
    assert client.get(f"/admin/billing/ledgerentry/{entry.pk}/change/").status_code == 200
    assert (
        client.post(
            f"/admin/billing/ledgerentry/{entry.pk}/change/", {"amount_micros": "6"}
        ).status_code
        == 403
    )
    assert (
        client.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/billing/ledgerentry/add/").status_code == 403
    assert LedgerEntry.objects.get().amount_micros == 5


def test_admin_plan_form_round_trips_max_wei_unchanged(staff: User, plans: dict[str, Plan]) -> None:
    plan = plans["pay-per-image"]
    Plan.objects.filter(pk=plan.pk).update(flat_price_micros=MAX)
    client = staff_client(staff)
    page = client.get(f"/admin/billing/plan/{plan.pk}/change/").content.decode()
    assert f'value="{MAX}"' in page
    form: dict[str, Any] = {
        "slug": plan.slug, "name": plan.name, "plan_type": plan.plan_type,
        "monthly_generation_allowance": "", "monthly_generation_cap": "",
        "subscription_fee_micros": "0", "multiplier_numerator": "1",
        "multiplier_denominator": "1", "flat_price_micros": str(MAX), "is_active": "on",
    }  # fmt: skip
    assert client.post(f"/admin/billing/plan/{plan.pk}/change/", form).status_code == 302
    assert Plan.objects.get(pk=plan.pk).flat_price_micros == MAX


def test_admin_pymthouse_view_shows_errors_instead_of_crashing(
    usage_user: User, staff: User, sandbox: SandboxControl
) -> None:
    client = staff_client(staff)
    sandbox.set_config(openMeterEnabled=False)  # a fresh pymthouse: metering not configured
    page = client.get(f"/admin/billing/account/{usage_user.pk}/pymthouse/")
    assert page.status_code == 200
    assert "data-pymthouse-error" in page.content.decode()
    sandbox.set_config(openMeterEnabled=True)
    sandbox.set_balance(usage_user.external_user_id, 4_780_000)
    page = client.get(f"/admin/billing/account/{usage_user.pk}/pymthouse/").content.decode()
    assert "data-pymthouse-error" not in page
    assert "<td>4780000</td>" in page
    calls = sandbox.requests("/api/v1/builder/apps/")
    # The 503 is retried by the client (a GET), then shown; the second view reads once.
    assert len(calls) == (1 + settings.PYMTHOUSE_MAX_RETRIES) + 1
    assert not LedgerEntry.objects.exists()  # reading pymthouse changes nothing here


def test_admin_account_is_not_editable(usage_user: User, staff: User) -> None:
    grant(usage_user, 5)
    client = staff_client(staff)
    response = client.post(
        f"/admin/billing/account/{usage_user.pk}/change/", {"balance_micros": str(MAX)}
    )
    assert Account.objects.get(pk=usage_user.pk).balance_micros == 5
    assert response.status_code == 403


def test_replayed_grant_submits_write_one_history_row(usage_user: User, staff: User) -> None:
    """Eight submits of one form (back button, double clicks): one entry, one history row."""
    client = staff_client(staff)
    form = {"operation": "grant", "amount_micros": "50.00", "reason": "goodwill",
            "idempotency_key": _credit_form(client, usage_user.pk)}  # fmt: skip
    for _ in range(8):
        response = client.post(f"/admin/billing/account/{usage_user.pk}/credit/", form)
        assert response.status_code == 302
    entry = LedgerEntry.objects.get()
    history = list(
        LogEntry.objects.filter(object_id=str(usage_user.pk)).values_list(
            "change_message", flat=True
        )
    )
    assert history == [
        f"Granted promotional credit (no expiry) $50.00: goodwill [ledger entry {entry.pk}]"
    ]
    assert Account.objects.get(pk=usage_user.pk).balance_micros == 50_000_000


def test_the_pymthouse_view_without_account_permission_is_403_not_500(
    usage_user: User, make_user: Callable[..., User]
) -> None:
    """A staff account with no billing permission: 403 (was Python's PermissionError: 500)."""
    clerk = make_user(email="clerk@example.com", is_staff=True)
    client = Client(raise_request_exception=False)
    client.force_login(clerk)
    response = client.get(f"/admin/billing/account/{usage_user.pk}/pymthouse/")
    assert response.status_code == 403
    assert not LogEntry.objects.exists()


def test_every_credit_has_a_receipt_only_its_owner_can_open(
    usage_user: User, make_user: Callable[..., User], client: Client
) -> None:
    from billing.services import credit_grant

    entry = credit_grant(
        user=usage_user, amount_micros=12_500_000, reason="Welcome credit", acting_user=None,
        idempotency_key="welcome",
    )  # fmt: skip
    client.force_login(usage_user)
    page = client.get("/billing/").content.decode()
    assert f'href="/billing/receipts/{entry.pk}/"' in page
    receipt = client.get(f"/billing/receipts/{entry.pk}/").content.decode()
    assert f"PH-{entry.pk:08d}" in receipt
    assert 'data-receipt-amount="12500000">$12.50</strong>' in receipt
    assert "Welcome credit" in receipt
    other = Client()
    other.force_login(make_user())
    assert other.get(f"/billing/receipts/{entry.pk}/").status_code == 404


def test_a_free_user_sees_images_per_day(
    make_user: Callable[..., User], plans: dict[str, Plan], client: Client
) -> None:
    user = make_user()
    for _ in range(3):
        with transaction.atomic():
            admit_generation(new_generation(user))
    client.force_login(user)
    page = client.get("/billing/").content.decode()
    assert "Images per day" in page
    assert "3 images" in page
    assert "Charges per day" not in page  # a free plan is not charged per image


def test_a_subscription_plan_needs_its_period(
    usage_user: User, staff: User, plans: dict[str, Plan]
) -> None:
    client = staff_client(staff)
    url = f"/admin/billing/account/{usage_user.pk}/plan/"
    response = client.post(url, {"plan": plans["studio"].pk, "reason": "upgrade"})
    assert response.status_code == 200
    assert "A subscription needs the end of its active period" in response.content.decode()
    assert Account.objects.get(pk=usage_user.pk).plan.slug == "pay-as-you-go"
    response = client.post(
        url,
        {"plan": plans["studio"].pk, "reason": "upgrade",
         "subscription_starts_at": "2026-12-01 00:00", "subscription_ends_at": "2026-12-31 00:00"},
    )  # fmt: skip
    assert response.status_code == 302
    assert Account.objects.get(pk=usage_user.pk).plan.slug == "studio"


def test_activity_shows_what_moved_money_and_open_holds_not_finished_holds(
    usage_user: User, client: Client
) -> None:
    grant(usage_user, 5_000_000)
    finished = new_generation(usage_user, prompt="finished")
    running = new_generation(usage_user, prompt="running")
    with transaction.atomic():
        admit_generation(finished)
        admit_generation(running)
    charge_at_payment(generation_id=finished.pk, expected_fee_wei=4_768_371_000_000)
    client.force_login(usage_user)
    page = client.get("/billing/").content.decode()
    kinds = re.findall(r"<strong>(Credit added|Held|Hold returned|Image charge)</strong>", page)
    assert kinds == ["Image charge", "Held", "Credit added"]  # newest first
    assert "“running” (SDXL-Lightning)" in page  # the open hold, in words
    csv_body = b"".join(client.get("/billing/ledger.csv").streaming_content).decode()
    assert sorted(row.split(",")[2] for row in csv_body.splitlines()[1:]) == [
        "grant", "hold", "hold", "hold_release", "usage_debit"
    ]  # fmt: skip
