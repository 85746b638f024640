"""``/staff/billing/``: staff only; the per-user table, totals, search, sort, pages, CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client

from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from usage.models import UsageSyncStatus, UsageUserAggregate
from usage.services.sync import usage_sync_run

pytestmark = pytest.mark.django_db

MAX_UINT256 = 2**256 - 1
URL = "/staff/billing/"


def _row(ext: str, manifest: str, fee_wei: int, usd: int, requests: int = 1) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": str(usd),
        "requests": requests,
    }


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(billing_staff())
    return client


def _users_table(response: Any) -> str:
    page: str = response.content.decode()
    return page.split('<table class="usage-table">', 1)[1].split("</table>", 1)[0]


def _csv(response: Any) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_only_staff_see_the_dashboard_and_the_csv() -> None:
    anonymous = Client()
    for url in (URL, URL + "csv/"):
        assert anonymous.get(url).status_code == 302
    member = Client()
    member.force_login(UserFactory())
    for url in (URL, URL + "csv/"):
        response = member.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_table_totals_and_csv_are_exact(sandbox: SandboxControl, staff_client: Client) -> None:
    alice = UserFactory(email="alice@example.com")
    sandbox.seed_usage(
        [
            _row(alice.external_user_id, "a1", 10**30, 1_500_000, requests=2),
            _row(alice.external_user_id, "a2", 10**30 + 1, 1),
            _row("unprovisioned-1", "u1", MAX_UINT256, 3),
        ]
    )
    usage_sync_run()
    response = staff_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice@example.com" in page
    # Long figures may wrap after each "," and "." (<wbr>); the digits are exact.
    assert "2,<wbr>000,<wbr>000,<wbr>000,<wbr>000.<wbr>000000000000000001 ETH" in page
    page = page.replace("<wbr>", "")
    assert "2,000,000,000,000.000000000000000001 ETH" in page  # 2·10**30 + 1 wei, exact
    assert "$1.500001" in page
    assert f'title="{MAX_UINT256} wei"' in page
    assert "Total (2 users)" in page
    assert "<svg" in page
    assert "http" not in page.split("<svg", 1)[1].split("</svg>")[0].replace(
        "http://www.w3.org/2000/svg", ""
    )

    rows = _csv(staff_client.get(URL + "csv/", {"sort": "eth"}))
    assert rows[0][:5] == [
        "external_user_id", "email", "request_count", "fee_wei", "network_fee_usd_micros",
    ]  # fmt: skip
    assert rows[1][:5] == [
        alice.external_user_id,
        "alice@example.com",
        "3",
        str(2 * 10**30 + 1),
        "1500001",
    ]
    assert rows[2][:5] == ["unprovisioned-1", "", "1", str(MAX_UINT256), "3"]
    assert int(rows[2][3]) == MAX_UINT256
    assert all("E" not in row[3] and "." not in row[3] for row in rows[1:])


def test_search_sort_and_pages(
    sandbox: SandboxControl, staff_client: Client, settings: Any
) -> None:
    settings.BILLING_STAFF_PAGE_SIZE = 2
    # Wei amounts of different lengths: text order would put 9 after 10**30.
    sandbox.seed_usage(
        [
            _row("user-a", "m1", 9, 9),
            _row("user-b", "m2", 10**30, 10**12),
            _row("user-c", "m3", 10**20, 10),
            _row("other-d", "m4", 5, 5),
        ]
    )
    usage_sync_run()
    ordered = [r[0] for r in _csv(staff_client.get(URL + "csv/", {"sort": "-eth"}))[1:]]
    assert ordered == ["user-b", "user-c", "user-a", "other-d"]
    ordered = [r[0] for r in _csv(staff_client.get(URL + "csv/", {"sort": "usd"}))[1:]]
    assert ordered == ["other-d", "user-a", "user-c", "user-b"]
    ordered = [
        r[0] for r in _csv(staff_client.get(URL + "csv/", {"q": "USER-", "sort": "user"}))[1:]
    ]
    assert ordered == ["user-a", "user-b", "user-c"]

    first = _users_table(staff_client.get(URL, {"sort": "-eth"}))
    assert "user-b" in first
    assert "user-c" in first
    assert "user-a" not in first
    assert "Page 1 of 2" in staff_client.get(URL, {"sort": "-eth"}).content.decode()
    second = _users_table(staff_client.get(URL, {"sort": "-eth", "page": "2"}))
    assert "user-a" in second
    assert "other-d" in second
    assert "user-b" not in second
    searched = staff_client.get(URL, {"q": "user-"}).content.decode()
    assert "Total (3 users)" in searched
    assert "Page 1 of 2" in searched
    # Nonsense parameters fall back to defaults instead of failing.
    assert staff_client.get(URL, {"sort": "password", "page": "-3"}).status_code == 200


def test_dashboard_says_metering_is_not_configured(
    sandbox: SandboxControl, staff_client: Client
) -> None:
    sandbox.set_config(openMeterEnabled=False)
    assert usage_sync_run().status == UsageSyncStatus.UNCONFIGURED
    page = staff_client.get(URL).content.decode()
    assert "metering (OpenMeter) is not configured" in page
    assert "The local ledger keeps charging users as usual." in page
    assert not UsageUserAggregate.objects.exists()


def test_mirrored_usage_is_read_only_in_the_admin(sandbox: SandboxControl) -> None:
    sandbox.seed_usage([_row("u-admin", "m-admin", MAX_UINT256, 1)])
    usage_sync_run()
    admin = Client()
    admin.force_login(UserFactory(is_staff=True, is_superuser=True))
    for model in ("usagemanifest", "usageuseraggregate", "usagesyncrun", "usagedrift"):
        assert admin.get(f"/admin/usage/{model}/").status_code == 200
        assert admin.get(f"/admin/usage/{model}/add/").status_code == 403
    manifest_page = admin.get("/admin/usage/usagemanifest/").content.decode()
    assert str(MAX_UINT256) in manifest_page


def test_the_navigation_links_the_staff_page_only_for_users_allowed_on_it() -> None:
    link = '<a href="/staff/billing/"'
    staff = Client()
    staff.force_login(billing_staff())
    for url in ("/generate/", "/billing/", URL):
        page = staff.get(url).content.decode()
        assert link in page, url
        assert "Staff billing</a>" in page
    assert f'{link} aria-current="page"' in staff.get(URL).content.decode()
    assert f'{link} aria-current="page"' not in staff.get("/billing/").content.decode()
    # A plain user, and staff without the usage permission, get no link to a page
    # that would refuse them.
    for user in (UserFactory(), UserFactory(is_staff=True)):
        client = Client()
        client.force_login(user)
        for url in ("/generate/", "/billing/"):
            page = client.get(url).content.decode()
            assert "/staff/billing/" not in page, url
            assert "Staff billing" not in page
