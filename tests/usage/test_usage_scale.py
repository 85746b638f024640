"""The usage mirror at scale: staff-table pages and prefix search on the denormalised
columns, the concurrent manifest fetch, and the quiet-ledger skip of the drift re-check."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts.services import user_email_change
from tests.billing.conftest import admit_generation, charge_at_payment
from tests.factories import UserFactory
from tests.integrations.conftest import builder_path
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from usage.models import (
    UsageDrift,
    UsageManifest,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)
from usage.selectors import usage_page, usage_totals, usage_users
from usage.services import sync as usage_sync_module
from usage.services.sync import usage_sync_run, usage_sync_state

pytestmark = pytest.mark.django_db

URL = "/staff/billing/"
USAGE = builder_path("/usage")


def _row(ext: str, manifest: str, fee_wei: int, usd: int) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": str(usd),
        "requests": 1,
    }


def _csv_users(response: Any) -> list[str]:
    text = b"".join(response.streaming_content).decode()
    return [row[0] for row in list(csv.reader(io.StringIO(text)))[1:]]


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(billing_staff())
    return client


@pytest.fixture
def mirrored(sandbox: SandboxControl) -> dict[str, Any]:
    """Seven users with local accounts, two without; amounts with ties (id breaks them)."""
    users = {
        "Zed-1": UserFactory(external_user_id="Zed-1", email="Carol@Example.com"),
        "zed-2": UserFactory(external_user_id="zed-2", email="alice@example.com"),
        "amy-3": UserFactory(external_user_id="amy-3", email="bob@example.com"),
        "amy-4": UserFactory(external_user_id="amy-4", email="ALICIA@example.org"),
        "bo-5": UserFactory(external_user_id="bo-5", email="d_ve@example.com"),
        "bo.6": UserFactory(external_user_id="bo.6", email="d%ve@example.com"),
        "cy-7": UserFactory(external_user_id="cy-7", email="frank@zed.example"),
    }
    fees = {"Zed-1": 5, "zed-2": 10**30, "amy-3": 5, "amy-4": 7, "bo-5": 5, "bo.6": 1, "cy-7": 5}
    rows = [_row(ext, f"m-{ext}", fee, fee) for ext, fee in fees.items()]
    rows += [_row("ghost-8", "m-ghost-8", 5, 5), _row("ghost-9", "m-ghost-9", 2**256 - 1, 9)]
    sandbox.seed_usage(rows)
    assert usage_sync_run().status == UsageSyncStatus.OK
    return users


def test_the_sync_denormalises_email_and_lower_cased_search_columns(
    mirrored: dict[str, Any],
) -> None:
    rows = {
        ext: (email, search_user, search_email)
        for ext, email, search_user, search_email in UsageUserAggregate.objects.values_list(
            "external_user_id", "email", "search_user", "search_email"
        )
    }
    assert rows["Zed-1"] == ("Carol@example.com", "zed-1", "carol@example.com")  # domain normalised
    assert rows["amy-4"] == ("ALICIA@example.org", "amy-4", "alicia@example.org")
    assert rows["ghost-8"] == ("", "ghost-8", "")
    # Rows written before the columns existed are filled after migrate (post_migrate).
    from usage.services.search import usage_aggregates_fill_search

    UsageUserAggregate.objects.update(email="", search_user="", search_email="")
    usage_aggregates_fill_search()
    after = set(
        UsageUserAggregate.objects.values_list(
            "external_user_id", "email", "search_user", "search_email"
        )
    )
    assert after == {(ext, *values) for ext, values in rows.items()}


def test_email_follows_the_user(mirrored: dict[str, Any]) -> None:
    user = mirrored["amy-3"]
    user_email_change(user=user, email="Bobby@Example.net")
    row = UsageUserAggregate.objects.get(external_user_id="amy-3")
    assert (row.email, row.search_email) == ("Bobby@Example.net", "bobby@example.net")
    assert [r.external_user_id for r in usage_users(search="BOBBY@")] == ["amy-3"]
    assert list(usage_users(search="bob@")) == []


def test_search_is_a_case_insensitive_prefix_of_user_id_or_email(
    mirrored: dict[str, Any], staff_client: Client
) -> None:
    def found(query: str) -> list[str]:
        return sorted(r.external_user_id for r in usage_users(search=query, sort="user"))

    assert found("ZED") == ["Zed-1", "zed-2"]  # user ids, either case
    assert found("ali") == ["amy-4", "zed-2"]  # emails, either case
    assert found("  carol@example.COM ") == ["Zed-1"]
    assert found("zed.example") == []  # a prefix search: no substring matches
    assert found("example") == []
    # LIKE wildcards in the query are literal characters.
    assert found("D_") == ["bo-5"]
    assert found("d%") == ["bo.6"]
    assert found("%") == []
    assert found("_") == []
    totals = usage_totals(search="zed")
    assert (totals.users, totals.requests, totals.fee_wei, totals.network_fee_usd_micros) == (
        2,
        2,
        10**30 + 5,
        10**30 + 5,
    )
    page = staff_client.get(URL, {"q": "ZED"}).content.decode()
    assert "Total (2 users)" in page
    assert _csv_users(staff_client.get(URL + "csv/", {"q": "Zed", "sort": "-eth"})) == [
        "zed-2",
        "Zed-1",
    ]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # Ties on the amount are broken by id (insertion order of the sync: seed order).
        ("eth", "bo.6 Zed-1 amy-3 bo-5 cy-7 ghost-8 amy-4 zed-2 ghost-9".split()),
        ("-eth", "ghost-9 zed-2 amy-4 ghost-8 cy-7 bo-5 amy-3 Zed-1 bo.6".split()),
        ("email", "ghost-8 ghost-9 amy-4 Zed-1 zed-2 amy-3 bo.6 bo-5 cy-7".split()),
        ("user", "Zed-1 amy-3 amy-4 bo-5 bo.6 cy-7 ghost-8 ghost-9 zed-2".split()),
    ],
)  # fmt: skip
def test_every_page_of_every_sort_is_exact(
    mirrored: dict[str, Any], staff_client: Client, settings: Any, sort: str, expected: list[str]
) -> None:
    if sort == "email" and connection.vendor == "postgresql":
        # Text order is the database collation's; the pages must follow it exactly.
        expected = list(
            UsageUserAggregate.objects.order_by("email", "id").values_list(
                "external_user_id", flat=True
            )
        )
    if sort == "user" and connection.vendor == "postgresql":
        expected = list(
            UsageUserAggregate.objects.order_by("external_user_id").values_list(
                "external_user_id", flat=True
            )
        )
    settings.BILLING_STAFF_PAGE_SIZE = 2
    pages = [
        [row.external_user_id for row in usage_page(sort=sort, page=page, size=2)]
        for page in range(1, 6)
    ]
    assert pages == [expected[0:2], expected[2:4], expected[4:6], expected[6:8], expected[8:9]]
    assert usage_page(sort=sort, page=6, size=2) == []
    assert _csv_users(staff_client.get(URL + "csv/", {"sort": sort})) == expected
    # The view clamps to the last page and shows the same rows as the selector.
    html = staff_client.get(URL, {"sort": sort, "page": "99"}).content.decode()
    assert "Page 5 of 5" in html
    table = html.split('<table class="usage-table">', 1)[1].split("</table>", 1)[0]
    assert expected[8] in table
    assert all(ext not in table for ext in expected[:8] if ext != expected[8])


def test_deep_pages_read_only_the_page_rows(
    mirrored: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    # One query walks the ids, one reads the page's rows: never the rows before it.
    with django_assert_max_num_queries(2):
        rows = usage_page(sort="-usd", page=4, size=2)
    assert [r.external_user_id for r in rows] == ["amy-3", "Zed-1"]


# --- the concurrent manifest fetch --------------------------------------------------------


def test_concurrent_fetch_calls_each_changed_user_once_and_applies_exactly(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.BILLING_USAGE_SYNC_CONCURRENCY = 8
    settings.BILLING_USAGE_SYNC_CHUNK = 3
    sandbox.seed_usage(
        [
            _row(f"u-{i:02d}", f"m-{i}-{n}", 10**30 + i * 10 + n, 7)
            for i in range(20)
            for n in range(3)
        ]
    )
    sandbox.add_fault("GET", USAGE, delay=0.02)
    sandbox.clear_requests()
    run = usage_sync_run()
    assert (run.status, run.users_changed, run.manifests_new) == (UsageSyncStatus.OK, 20, 60)
    queries = [r["query"] for r in sandbox.requests(USAGE) if r["path"] == USAGE]
    assert len(queries) == 21
    per_user = sorted(q.split("userId=")[1].split("&")[0] for q in queries if "userId=" in q)
    assert per_user == [f"u-{i:02d}" for i in range(20)]
    for i in range(20):
        row = UsageUserAggregate.objects.get(external_user_id=f"u-{i:02d}")
        assert (row.fee_wei, row.manifest_count) == (3 * 10**30 + 30 * i + 3, 3)
    state = usage_sync_state()
    assert state.fee_wei == sum(10**30 + i * 10 + n for i in range(20) for n in range(3))
    assert UsageManifest.objects.count() == 60
    # Nothing changed upstream: nothing fetched, nothing written again.
    sandbox.clear_requests()
    again = usage_sync_run()
    assert (again.users_changed, again.manifests_new) == (0, 0)
    assert len([r for r in sandbox.requests(USAGE) if r["path"] == USAGE]) == 1


def test_a_concurrent_fetch_killed_after_one_chunk_keeps_only_that_chunk(
    sandbox: SandboxControl, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BILLING_USAGE_SYNC_CONCURRENCY = 4
    settings.BILLING_USAGE_SYNC_CHUNK = 2
    sandbox.seed_usage(
        [_row(f"u-{i}", f"m-{i}-{n}", 10**30 + n, 1) for i in range(6) for n in range(2)]
    )
    original = usage_sync_module._apply_chunk
    applied: list[list[str]] = []

    def dies_after_first_chunk(**kwargs: Any) -> None:
        if applied:
            raise SystemExit("worker killed")
        original(**kwargs)
        applied.append(sorted(kwargs["fetched"]))

    monkeypatch.setattr(usage_sync_module, "_apply_chunk", dies_after_first_chunk)
    with pytest.raises(SystemExit):
        usage_sync_run()
    monkeypatch.setattr(usage_sync_module, "_apply_chunk", original)
    # The next chunk was fetched ahead, but only the applied chunk is in the database.
    assert set(UsageUserAggregate.objects.values_list("external_user_id", flat=True)) == set(
        applied[0]
    )
    assert UsageManifest.objects.count() == 4
    UsageSyncState.objects.update(lease_until=None)
    rerun = usage_sync_run()
    assert (rerun.status, rerun.users_changed, rerun.manifests_new) == ("ok", 4, 8)
    assert usage_sync_state().fee_wei == sum(10**30 + n for _ in range(6) for n in range(2))


# --- the quiet-ledger skip of the drift re-check -------------------------------------------


def _paid_debit(owner: Any, manifest_id: str, fee: int) -> None:
    from django.db import transaction

    from inference.models import Generation

    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
            height=512, manifest_id=manifest_id, expected_fee_wei=fee,
        )  # fmt: skip
        admit_generation(generation)
        charge_at_payment(generation_id=generation.pk, expected_fee_wei=fee)


def test_drift_recheck_is_skipped_only_while_the_ledger_is_quiet(
    sandbox: SandboxControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billing.models import LedgerEntry, Plan
    from billing.services import account_change_plan, credit_grant, plans_seed

    plans_seed()
    owner = UserFactory()
    account_change_plan(
        user=owner, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="t"
    )
    credit_grant(
        user=owner, amount_micros=10**30, reason="t", acting_user=None, idempotency_key="g"
    )
    _paid_debit(owner, "sess-a", 10**18)
    rechecks: list[object] = []
    original = usage_sync_module.local_usage_debits

    def counting(**kwargs: Any) -> Any:
        rechecks.append(kwargs.get("changed_since"))
        return original(**kwargs)

    monkeypatch.setattr(usage_sync_module, "local_usage_debits", counting)
    usage_sync_run()
    state = usage_sync_state()
    top = LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first()
    assert state.ledger_mark_id == top
    assert len(rechecks) == 1
    charged = 10**18  # drift compares the network fee the charge recorded (wei)
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert drift.local_debit_wei == charged

    # The mark is younger than the slack: a run with nothing new still re-checks.
    usage_sync_run()
    assert len(rechecks) == 2
    # The ledger has been quiet since 15 minutes before the last run: skipped (no query).
    assert state.ledger_mark_at is not None
    UsageSyncState.objects.update(ledger_mark_at=state.ledger_mark_at - timedelta(minutes=15))
    usage_sync_run()
    assert len(rechecks) == 2
    # A new debit moves the mark: the next run re-checks and finds it, exactly.
    _paid_debit(owner, "sess-b", 10**18 + 1)
    usage_sync_run()
    assert len(rechecks) == 3
    drift.refresh_from_db()
    assert drift.local_debit_wei == charged + 10**18 + 1
    assert usage_sync_state().ledger_mark_id == LedgerEntry.objects.order_by("-id")[0].id
