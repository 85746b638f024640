"""The first full sync: one groupBy=user call, day-windowed app-wide manifest calls joined
to generations by manifest id, per-user calls only for users those rows do not explain."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import pytest

from inference.models import Generation
from tests.factories import UserFactory
from tests.integrations.conftest import builder_path
from tests.sandbox_server import SandboxControl
from usage.models import (
    UsageDay,
    UsageDrift,
    UsageManifest,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)
from usage.services.appwide import _merged
from usage.services.sync import usage_sync_run

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
MAX_UINT256 = 2**256 - 1
DAY = 86400


def _usage_queries(sandbox: SandboxControl) -> list[str]:
    return [r["query"] for r in sandbox.requests(USAGE) if r["path"] == USAGE]


def _mirror() -> dict[str, Any]:
    return {
        "manifests": sorted(
            UsageManifest.objects.values_list(
                "external_user_id", "manifest_id", "user_id", "generation_id", "fee_wei",
                "network_fee_usd_micros", "pipeline", "model_id", "day", "flagged",
            )
        ),
        "aggregates": sorted(
            UsageUserAggregate.objects.values_list(
                "external_user_id", "user_id", "request_count", "network_fee_usd_micros",
                "fee_wei", "manifest_count", "email",
            )
        ),
        "days": sorted(
            UsageDay.objects.values_list("day", "fee_wei", "network_fee_usd_micros",
                                         "manifest_count")
        ),
        "drift": sorted(
            UsageDrift.objects.values_list("external_user_id", "day", "metered_fee_wei",
                                           "metered_usd_micros", "alert")
        ),
        "costs": sorted(
            (str(pk), wei, usd)
            for pk, wei, usd in Generation.objects.values_list("id", "cost_wei", "cost_usd_micros")
        ),
    }  # fmt: skip


def _forget_the_mirror() -> None:
    for model in (UsageManifest, UsageUserAggregate, UsageDay, UsageDrift):
        model.objects.all().delete()
    UsageSyncState.objects.update(upstream_fingerprint="")


@pytest.fixture
def app(sandbox: SandboxControl, settings: Any) -> dict[str, Any]:
    """Three users with generations; ``b`` also has a manifest no generation holds."""
    settings.BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS = 1
    settings.BILLING_USAGE_SYNC_CHUNK = 2
    settings.BILLING_USAGE_SYNC_APP_WIDE_CHUNK = 2  # a, b in one chunk, c in the next
    users = {name: UserFactory() for name in ("a", "b", "c")}
    now = time.time() - 60
    times = {"a-1": now, "a-2": now - 2 * DAY, "b-1": now, "b-orphan": now - DAY, "c-1": now}
    amounts = {"a-1": (10**30, 5), "a-2": (7, 2), "b-1": (3, 1), "b-orphan": (4, 1),
               "c-1": (MAX_UINT256, 9)}  # fmt: skip
    generations = {}
    for manifest_id in ("a-1", "a-2", "b-1", "c-1"):
        generations[manifest_id] = Generation.objects.create(
            owner=users[manifest_id[0]], prompt="p", model_id="m", width=512, height=512,
            manifest_id=manifest_id,
        )  # fmt: skip
    sandbox.seed_usage(
        [
            {"externalUserId": users[manifest_id[0]].external_user_id, "manifestId": manifest_id,
             "feeWei": str(amounts[manifest_id][0]), "usdMicros": str(amounts[manifest_id][1]),
             "time": times[manifest_id]}
            for manifest_id in times
        ]
    )  # fmt: skip
    days = {datetime.fromtimestamp(moment, UTC).date() for moment in times.values()}
    today = datetime.now(UTC).date()
    sandbox.clear_requests()
    return {"users": users, "generations": generations, "windows": (today - min(days)).days + 1}


def test_first_full_sync_reads_the_app_by_day_and_asks_per_user_only_for_the_unexplained(
    sandbox: SandboxControl, app: dict[str, Any]
) -> None:
    users = app["users"]
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.OK, run.detail
    queries = _usage_queries(sandbox)
    assert "groupBy=user" in queries[0]
    app_wide = [q for q in queries if "groupBy=manifest" in q and "userId" not in q]
    probes = [q for q in queries if "groupBy=none" in q]
    per_user = [q.split("userId=")[1].split("&")[0] for q in queries if "userId=" in q]
    # one call per day back to the first day with usage, each followed by a probe of
    # everything before it; the last probe finds nothing and ends the walk
    assert len(app_wide) == len(probes) == app["windows"]
    assert all("startDate=" in q and "endDate=" in q for q in app_wide)
    # b's orphan manifest joins no generation: b's total is not explained, b alone is
    # read with userId (a and c never are)
    assert per_user == [users["b"].external_user_id]
    assert len(queries) == 1 + 2 * app["windows"] + 1
    assert (run.users_seen, run.users_changed, run.manifests_new) == (3, 3, 5)
    assert f"{len(queries)} calls" in run.detail
    rows = {m: (ext, gen, fee) for ext, m, gen, fee in UsageManifest.objects.values_list(
        "external_user_id", "manifest_id", "generation_id", "fee_wei")}  # fmt: skip
    generations = app["generations"]
    assert rows == {
        "a-1": (users["a"].external_user_id, generations["a-1"].pk, 10**30),
        "a-2": (users["a"].external_user_id, generations["a-2"].pk, 7),
        "b-1": (users["b"].external_user_id, generations["b-1"].pk, 3),
        "b-orphan": (users["b"].external_user_id, None, 4),
        "c-1": (users["c"].external_user_id, generations["c-1"].pk, MAX_UINT256),
    }
    a = UsageUserAggregate.objects.get(external_user_id=users["a"].external_user_id)
    assert (a.fee_wei, a.manifest_count, a.network_fee_usd_micros) == (10**30 + 7, 2, 7)
    generations["c-1"].refresh_from_db()
    assert generations["c-1"].cost_wei == MAX_UINT256


def test_first_full_sync_leaves_the_mirror_exactly_as_the_per_user_sync(
    sandbox: SandboxControl, app: dict[str, Any], settings: Any
) -> None:
    assert usage_sync_run().status == UsageSyncStatus.OK
    app_wide = _mirror()
    sandbox.clear_requests()
    assert usage_sync_run().users_changed == 0  # replay: nothing new
    assert len(_usage_queries(sandbox)) == 1
    assert _mirror() == app_wide

    _forget_the_mirror()
    settings.BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS = 10**9
    sandbox.clear_requests()
    assert usage_sync_run().status == UsageSyncStatus.OK
    assert all("userId=" in q for q in _usage_queries(sandbox)[1:])
    assert _mirror() == app_wide


def test_below_the_threshold_every_changed_user_is_read_with_user_id(
    sandbox: SandboxControl, app: dict[str, Any], settings: Any
) -> None:
    settings.BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS = 4
    usage_sync_run()
    queries = _usage_queries(sandbox)
    assert len(queries) == 4
    assert not [q for q in queries if "groupBy=manifest" in q and "userId" not in q]


def test_a_configured_start_bounds_the_windows_without_probes(
    sandbox: SandboxControl, app: dict[str, Any], settings: Any
) -> None:
    settings.BILLING_USAGE_SYNC_START = datetime.now(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    run = usage_sync_run()
    queries = _usage_queries(sandbox)
    assert not [q for q in queries if "groupBy=none" in q]
    assert len([q for q in queries if "groupBy=manifest" in q and "userId" not in q]) == 1
    assert run.status == UsageSyncStatus.OK


def _piece(window: int, fee: int, exact: tuple[int, int] | None, usd: int) -> Any:
    return (window, "m", fee, usd, exact, "p", "x", uuid.UUID(int=1), date(2026, 1, 1))


def test_parts_of_a_manifest_from_two_windows_are_summed_once() -> None:
    """A session straddling midnight: wei and exact micros summed, USD micros the ceiling
    of the summed exact micros (not the sum of each part's ceiling)."""
    (row,) = _merged([_piece(0, 10, (3, 2), 2), _piece(1, 5, (1, 4), 1)])
    assert (row.fee_wei, row.network_fee_usd_exact_micros, row.network_fee_usd_micros) == (
        15, Fraction(7, 4), 2,
    )  # fmt: skip
    (row,) = _merged([_piece(0, 10, None, 2), _piece(1, 5, None, 1)])
    assert (row.fee_wei, row.network_fee_usd_micros) == (15, 3)
    # two rows for one manifest in one window: left to the screen (conflict or repeat)
    assert len(_merged([_piece(0, 10, None, 2), _piece(0, 11, None, 2)])) == 2
