"""The usage mirror against the sandbox over real HTTP (seeded through its control API)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from inference.models import Generation
from tests.billing.conftest import admit_generation, charge_at_payment
from tests.factories import UserFactory
from tests.integrations.conftest import builder_path
from tests.sandbox_server import SandboxControl
from usage.models import (
    UsageDrift,
    UsageManifest,
    UsageManifestRevision,
    UsageSyncRun,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)
from usage.services import sync as usage_sync_module
from usage.services.sync import usage_sync_run, usage_sync_state

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
MAX_UINT256 = 2**256 - 1
BIG_FEES = (10**30, 10**30 + 1, MAX_UINT256)


def _row(ext: str, manifest: str, fee_wei: int, usd: int, requests: int = 1) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": str(usd),
        "requests": requests,
    }


def _forget_what_was_applied() -> None:
    """Make the next run re-read every user's manifests (as if all aggregates changed)."""
    UsageUserAggregate.objects.update(request_count=0)
    UsageSyncState.objects.update(upstream_fingerprint="")


def _usage_calls(sandbox: SandboxControl) -> list[dict[str, Any]]:
    return [record for record in sandbox.requests(USAGE) if record["path"] == USAGE]


def _snapshot() -> dict[str, Any]:
    return {
        "aggregates": sorted(
            UsageUserAggregate.objects.values_list(
                "external_user_id", "request_count", "network_fee_usd_micros", "fee_wei",
                "manifest_count",
            )
        ),
        "manifests": sorted(
            UsageManifest.objects.values_list(
                "external_user_id", "manifest_id", "fee_wei", "network_fee_usd_micros", "flagged"
            )
        ),
        "revisions": UsageManifestRevision.objects.count(),
    }  # fmt: skip


def test_huge_wei_amounts_are_mirrored_exactly(sandbox: SandboxControl) -> None:
    sandbox.seed_usage(
        [
            _row("big-a", "m-0", 10**30, 7),
            _row("big-a", "m-1", 10**30 + 1, 8),
            _row("big-b", "m-2", MAX_UINT256, 9),
        ]
    )
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.OK
    rows = dict(UsageManifest.objects.values_list("manifest_id", "fee_wei"))
    assert rows == {"m-0": 10**30, "m-1": 10**30 + 1, "m-2": MAX_UINT256}
    a = UsageUserAggregate.objects.get(external_user_id="big-a")
    assert (a.fee_wei, a.request_count, a.network_fee_usd_micros) == (2 * 10**30 + 1, 2, 15)
    b = UsageUserAggregate.objects.get(external_user_id="big-b")
    assert (b.fee_wei, b.manifest_count) == (MAX_UINT256, 1)
    state = usage_sync_state()
    # The total is more wei than 2**256-1 can hold: saturated, logged, not a crash.
    assert state.fee_wei == MAX_UINT256
    assert (state.user_count, state.request_count, state.network_fee_usd_micros) == (2, 3, 24)
    assert state.watermark == run.window_end


def test_one_user_call_then_one_manifest_call_per_changed_user(sandbox: SandboxControl) -> None:
    sandbox.seed_usage([_row("u-a", "a1", 100, 1), _row("u-b", "b1", 200, 2)])
    sandbox.clear_requests()
    usage_sync_run()
    queries = sorted((r["query"] for r in _usage_calls(sandbox)), key=len)
    assert len(queries) == 3
    assert "groupBy=user" in queries[0]
    assert "userId" not in queries[0]
    assert sorted(q.split("userId=")[1].split("&")[0] for q in queries[1:]) == ["u-a", "u-b"]

    # Only u-b changes: one user call and one manifest call for u-b.
    sandbox.seed_usage([_row("u-b", "b2", 300, 3)])
    sandbox.clear_requests()
    run = usage_sync_run()
    calls = _usage_calls(sandbox)
    assert len(calls) == 2
    assert "userId=u-b" in calls[1]["query"]
    assert (run.users_seen, run.users_changed, run.manifests_new) == (2, 1, 1)
    assert UsageUserAggregate.objects.get(external_user_id="u-b").fee_wei == 500


def test_replayed_and_overlapping_syncs_change_nothing(sandbox: SandboxControl) -> None:
    sandbox.seed_usage([_row("u-a", "a1", 10**30, 5), _row("u-a", "a2", 1, 1)])
    usage_sync_run()
    before = _snapshot()
    watermark = usage_sync_state().watermark
    sandbox.clear_requests()
    replay = usage_sync_run()
    assert replay.status == UsageSyncStatus.OK
    assert (replay.users_changed, replay.manifests_new, replay.revisions_new) == (0, 0, 0)
    assert _snapshot() == before
    assert len(_usage_calls(sandbox)) == 1  # the user call only: nothing changed
    assert usage_sync_state().watermark is not None
    assert watermark is not None
    assert usage_sync_state().watermark >= watermark


def test_changed_amount_is_a_flagged_revision_not_an_overwrite(sandbox: SandboxControl) -> None:
    sandbox.seed_usage([_row("u-a", "a1", 1000, 10)])
    usage_sync_run()
    sandbox.seed_usage([_row("u-a", "a1", 1, 1)])  # the same manifest grows by 1 wei
    run = usage_sync_run()
    assert run.revisions_new == 1
    manifest = UsageManifest.objects.get(manifest_id="a1")
    assert (manifest.fee_wei, manifest.flagged) == (1000, True)
    revision = manifest.revisions.get()
    assert (revision.fee_wei, revision.network_fee_usd_micros) == (1001, 11)
    assert UsageUserAggregate.objects.get(external_user_id="u-a").fee_wei == 1000
    assert usage_sync_state().flagged_revisions == 1
    # Seeing the same revised amount again records nothing new.
    UsageUserAggregate.objects.filter(external_user_id="u-a").update(request_count=0)
    again = usage_sync_run()
    assert again.revisions_new == 0
    assert UsageManifestRevision.objects.count() == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, {"error": "OpenMeter not configured (OPENMETER_URL required)"}, "unconfigured"),
        (404, {"error": "Not found"}, "bad_credentials"),
    ],
)
def test_usage_errors_are_recorded_and_change_nothing(
    sandbox: SandboxControl, status: int, body: dict[str, str], expected: str
) -> None:
    sandbox.seed_usage([_row("u-a", "a1", 5, 5)])
    usage_sync_run()
    before = _snapshot()
    watermark = usage_sync_state().watermark
    sandbox.seed_usage([_row("u-a", "a2", 6, 6)])
    sandbox.add_fault("GET", USAGE, status=status, body=body)
    run = usage_sync_run()
    assert run.status == expected
    assert run.users_changed == 0
    assert _snapshot() == before
    state = usage_sync_state()
    assert (state.status, state.watermark, state.lease_token) == (expected, watermark, "")
    assert UsageSyncRun.objects.filter(status=expected).count() == 1


def test_metering_not_configured_upstream_is_recorded(sandbox: SandboxControl) -> None:
    sandbox.set_config(openMeterEnabled=False)
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.UNCONFIGURED
    assert "OpenMeter not configured" in run.detail
    assert not UsageUserAggregate.objects.exists()


def test_timeout_is_recorded(sandbox: SandboxControl, settings: Any) -> None:
    settings.PYMTHOUSE_READ_TIMEOUT = 0.3
    settings.PYMTHOUSE_MAX_RETRIES = 0
    sandbox.add_fault("GET", USAGE, delay=2.0)
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.TIMEOUT
    assert usage_sync_state().watermark is None


def test_a_sync_killed_halfway_is_consistent_after_a_rerun(
    sandbox: SandboxControl, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BILLING_USAGE_SYNC_CHUNK = 2
    settings.BILLING_USAGE_SYNC_CONCURRENCY = 1
    rows = [_row(f"u-{i}", f"m-{i}-{n}", 10**30 + n, 1) for i in range(5) for n in range(2)]
    sandbox.seed_usage(rows)
    original = usage_sync_module._apply_chunk
    applied_chunks = []

    def dies_after_first_chunk(**kwargs: Any) -> None:
        if applied_chunks:
            raise SystemExit("worker killed")  # the process dies mid-run
        original(**kwargs)
        applied_chunks.append(sorted(kwargs["fetched"]))

    monkeypatch.setattr(usage_sync_module, "_apply_chunk", dies_after_first_chunk)
    with pytest.raises(SystemExit):
        usage_sync_run()
    monkeypatch.setattr(usage_sync_module, "_apply_chunk", original)
    assert usage_sync_state().watermark is None
    applied = set(UsageUserAggregate.objects.values_list("external_user_id", flat=True))
    assert applied == set(applied_chunks[0])
    assert len(applied) == 2
    assert UsageManifest.objects.count() == 4

    rerun = usage_sync_run()
    assert rerun.status == UsageSyncStatus.OK
    assert rerun.users_changed == 3
    assert UsageManifest.objects.count() == 10
    assert usage_sync_state().fee_wei == sum(10**30 + n for _ in range(5) for n in range(2))
    assert usage_sync_run().users_changed == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("fetch_threads", "chunk"), [(1, 500), (8, 4)])
def test_concurrent_syncs_do_not_double_count(
    sandbox: SandboxControl, settings: Any, fetch_threads: int, chunk: int
) -> None:
    """Two runs at once, with sequential and with threaded, chunked manifest fetches."""
    settings.BILLING_USAGE_SYNC_CONCURRENCY = fetch_threads
    settings.BILLING_USAGE_SYNC_CHUNK = chunk
    sandbox.seed_usage([_row(f"u-{i}", f"m-{i}", 10**30 + i, 1) for i in range(30)])
    sandbox.add_fault("GET", USAGE, delay=0.05)
    results: list[UsageSyncRun] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(usage_sync_run())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(run.status for run in results) == ["ok", "skipped"]
    assert sorted(UsageUserAggregate.objects.values_list("manifest_count", flat=True)) == [1] * 30
    # Even bypassing the lease, the natural keys keep one row per manifest.
    UsageSyncState.objects.update(lease_until=None)
    _forget_what_was_applied()
    assert usage_sync_run().manifests_new == 0
    assert UsageManifest.objects.count() == 30
    assert usage_sync_state().fee_wei == sum(10**30 + i for i in range(30))


def test_expired_lease_of_a_crashed_run_is_taken_over(sandbox: SandboxControl) -> None:
    usage_sync_state()
    UsageSyncState.objects.update(
        lease_token="dead", lease_until=timezone.now() + timedelta(seconds=60)
    )
    assert usage_sync_run().status == UsageSyncStatus.SKIPPED
    UsageSyncState.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    assert usage_sync_run().status == UsageSyncStatus.OK


def test_manifest_rows_join_generations_and_record_the_metered_fee(
    sandbox: SandboxControl,
) -> None:
    owner = UserFactory()
    other = UserFactory()
    generation = Generation.objects.create(
        owner=owner, prompt="p", model_id="m", width=512, height=512,
        manifest_id="sess-1", expected_fee_wei=MAX_UINT256 - 1,
    )  # fmt: skip
    foreign = Generation.objects.create(
        owner=other, prompt="p", model_id="m", width=512, height=512, manifest_id="sess-2"
    )
    sandbox.seed_usage(
        [
            _row(owner.external_user_id, "sess-1", MAX_UINT256 - 5, 42),
            _row(owner.external_user_id, "sess-2", 5, 1),  # another user's manifest id
        ]
    )
    usage_sync_run()
    row = UsageManifest.objects.get(manifest_id="sess-1")
    assert row.generation_id == generation.pk
    assert row.user_id == owner.pk
    assert row.day == generation.created_at.date()
    generation.refresh_from_db()
    assert (generation.cost_wei, generation.cost_usd_micros) == (MAX_UINT256 - 5, 42)
    # The image page shows the metered fee next to the expected one, exactly.
    page = Client()
    page.force_login(owner)
    html = page.get(f"/generations/{generation.pk}/").content.decode()
    assert f'data-expected-fee-wei="{MAX_UINT256 - 1}"' in html
    assert f'data-metered-fee-wei="{MAX_UINT256 - 5}"' in html
    assert UsageManifest.objects.get(manifest_id="sess-2").generation_id is None
    foreign.refresh_from_db()
    assert foreign.cost_wei is None
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id, day=row.day)
    assert (drift.metered_fee_wei, drift.local_debit_wei) == (MAX_UINT256, 0)
    assert (drift.fee_diff_wei, drift.metered_usd_micros) == (MAX_UINT256, 43)
    # Metered with nothing debited, but the image took no hold (no charge was expected):
    # the operator's cost, shown, not an alert (the paid variant is an alert, below).
    assert drift.alert is False


def test_outcome_unknown_generation_settles_from_a_later_manifest_row(
    sandbox: SandboxControl,
) -> None:
    from django.db import transaction

    from billing.models import Account, Hold, HoldStatus, LedgerEntry, Plan
    from billing.services import account_change_plan, credit_grant, plans_seed

    plans_seed()
    owner = UserFactory()
    account_change_plan(
        user=owner, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="test"
    )
    credit_grant(
        user=owner, amount_micros=10**30, reason="test", acting_user=None, idempotency_key="g1"
    )
    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
            height=512, manifest_id="sess-unknown",
        )  # fmt: skip
        admit_generation(generation)
    Generation.objects.filter(pk=generation.pk).update(
        status="failed", error_code="outcome_unknown", payment_claimed_at=timezone.now()
    )
    hold = Hold.objects.get(generation_id=generation.pk)
    assert hold.status == HoldStatus.OPEN

    # Not metered yet: the sync settles nothing and the hold stays.
    assert usage_sync_run().settled == 0
    fee = 10**15 + 7
    sandbox.seed_usage([_row(owner.external_user_id, "sess-unknown", fee, 3)])
    run = usage_sync_run()
    assert run.settled == 1
    hold.refresh_from_db()
    assert hold.status == HoldStatus.SETTLED
    debit = LedgerEntry.objects.get(kind="usage_debit", generation_id=generation.pk)
    # The seeded row metered 10**15 + 7 wei as 3 µ$ (pymthouse's rate, about $3/ETH): the
    # charge uses that rate: 3 µ$ × 6/5 = 3.6 → 4 µ$, rounded up once.
    assert (debit.amount_micros, debit.rate_source, debit.network_fee_wei) == (4, "metered", fee)
    assert debit.usage_ref == "manifest:sess-unknown"
    account = Account.objects.get(pk=owner.pk)
    assert (account.balance_micros, account.held_micros) == (10**30 - debit.amount_micros, 0)
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.local_debit_wei, drift.metered_fee_wei) == (fee, fee)  # wei against wei
    assert drift.margin_wei == 0
    assert drift.alert is False
    # A replay neither settles again nor debits twice.
    _forget_what_was_applied()
    assert usage_sync_run().settled == 0
    assert LedgerEntry.objects.filter(kind="usage_debit").count() == 1


@pytest.mark.parametrize(
    "bad_row",
    [
        {"externalUserId": "u-a", "requestCount": 1, "networkFeeUsdMicros": "1E+30"},
        {"externalUserId": "u-a", "requestCount": 1, "networkFeeUsdMicros": 1.5},
        {"externalUserId": "u-a", "requestCount": 1, "networkFeeUsdMicros": "１２３"},
        {"externalUserId": "u-a", "requestCount": 1},
        {"externalUserId": None, "requestCount": 1, "networkFeeUsdMicros": "1"},
    ],
)
def test_a_malformed_user_row_is_an_error_and_changes_nothing(
    sandbox: SandboxControl, bad_row: dict[str, Any]
) -> None:
    sandbox.seed_usage([_row("u-a", "a1", 5, 5)])
    usage_sync_run()
    before = _snapshot()
    body = {
        "clientId": django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
        "source": "openmeter",
        "period": {"start": None, "end": None},
        "totals": {"requestCount": 1, "currency": "USD", "networkFeeUsdMicros": "5"},
        "byUser": [bad_row],
    }
    sandbox.add_fault("GET", USAGE, status=200, body=body)
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.ERROR
    assert "invalid byUser row" in run.detail
    assert _snapshot() == before


def test_an_unchanged_upstream_answer_ends_the_run_after_one_call(
    sandbox: SandboxControl,
) -> None:
    sandbox.seed_usage([_row(f"u-{i}", f"m-{i}", 10**30, 1) for i in range(5)])
    usage_sync_run()
    fingerprint = usage_sync_state().upstream_fingerprint
    assert len(fingerprint) == 64
    sandbox.clear_requests()
    run = usage_sync_run()
    assert (run.status, run.detail) == (UsageSyncStatus.OK, "5 users, unchanged")
    assert len(_usage_calls(sandbox)) == 1
    # One more ticket for one user changes the answer: that user is re-read, only.
    sandbox.seed_usage([_row("u-3", "m-3b", 1, 1)])
    sandbox.clear_requests()
    run = usage_sync_run()
    assert (run.users_changed, run.manifests_new) == (1, 1)
    assert [c["query"] for c in _usage_calls(sandbox)][1].count("userId=u-3") == 1
    assert usage_sync_state().upstream_fingerprint not in ("", fingerprint)


def test_drift_follows_local_debits_before_and_after_metering(sandbox: SandboxControl) -> None:
    from django.db import transaction

    from billing.models import Plan
    from billing.services import (
        account_change_plan,
        credit_grant,
        plans_seed,
    )

    plans_seed()
    owner = UserFactory()
    account_change_plan(
        user=owner, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="t"
    )
    credit_grant(
        user=owner, amount_micros=10**30, reason="t", acting_user=None, idempotency_key="g"
    )

    def paid_image(manifest_id: str, fee: int) -> Generation:
        with transaction.atomic():
            generation = Generation.objects.create(
                owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
                height=512, manifest_id=manifest_id, expected_fee_wei=fee,
            )  # fmt: skip
            admit_generation(generation)
            charge_at_payment(generation_id=generation.pk, expected_fee_wei=fee)
        return generation

    first = paid_image("sess-a", 10**18)
    usage_sync_run()  # nothing metered yet: the debit alone is drift with a positive margin
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    charged_first = 10**18  # the network fee the charge recorded (wei)
    assert (drift.day, drift.local_debit_wei, drift.metered_fee_wei) == (
        first.created_at.date(),
        charged_first,
        0,
    )
    assert drift.alert is False

    paid_image("sess-b", 10**18 + 1)  # a debit after the last run is picked up too
    sandbox.seed_usage([_row(owner.external_user_id, "sess-a", 10**18, 1)])
    usage_sync_run()
    drift.refresh_from_db()
    charged_second = 10**18 + 1
    assert (drift.local_debit_wei, drift.metered_fee_wei) == (
        charged_first + charged_second,
        10**18,
    )
    # The network charging more than we debited is an alert (logged and on the dashboard).
    sandbox.seed_usage([_row(owner.external_user_id, "sess-c", 10**21, 1)])
    usage_sync_run()
    drift.refresh_from_db()
    assert drift.metered_fee_wei == 10**18 + 10**21
    assert drift.alert is True
    assert usage_sync_state().drift_alerts == 1
