"""Usage, balance and identities: shapes, groupings, anti-enumeration 404s, lag, 503."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from sandbox.money import usd_micros_exact, usd_micros_for_fee
from sandbox.pymthouse import usage as usage_routes
from sandbox.state import UsageEvent
from tests.sandbox.helpers import (
    APP_ID,
    BASIC,
    FLUX,
    FLUX_RUNNER,
    M2M_ID,
    SDXL,
    SDXL_RUNNER,
    paid_call,
    provision,
)
from tests.sandbox_server import SandboxControl

PRICE = 4768371
# Fixed runner prices equal to the old per-pixel fees of these sizes:
# 1024x1024: 4_999_999_389_696 wei -> ceil(14999.998169088) = 15000 micros
# 512x512:   1_249_999_847_424 wei -> ceil(3749.999542272)  = 3750 micros
FEE_1024, USD_1024 = 1024 * 1024 * PRICE, 15000
FEE_512, USD_512 = 512 * 512 * PRICE, 3750
USAGE_PATHS = ["/api/v1/builder/apps/{app}/usage", "/api/v1/apps/{app}/usage"]
BALANCE_PATHS = ["/api/v1/builder/apps/{app}/usage/balance", "/api/v1/apps/{app}/usage/balance"]
TODAY = datetime.now(UTC).date().isoformat()


def generate(
    http: requests.Session,
    base: str,
    control: SandboxControl,
    user: str,
    side: int,
    model: str = SDXL,
) -> str:
    """One paid call at a fixed price of side² × PRICE wei; returns its manifest id."""
    runner = SDXL_RUNNER if model == SDXL else FLUX_RUNNER
    price = side * side * PRICE
    control.set_runner(runner, price=price)
    params, response = paid_call(http, base, user, runner=runner, price=price)
    assert response.status_code == 200, response.text
    manifest_id: str = params["manifest_id"]
    return manifest_id


def usage(
    http: requests.Session, base: str, path: str = USAGE_PATHS[0], **params: str
) -> requests.Response:
    return http.get(base + path.format(app=APP_ID), auth=BASIC, params=params)


@pytest.fixture
def two_users(http: requests.Session, base: str, control: SandboxControl) -> list[str]:
    """alpha: two calls at the 1024² price on SDXL; beta: one at the 512² price on FLUX."""
    return [
        generate(http, base, control, "alpha", 1024),
        generate(http, base, control, "alpha", 1024),
        generate(http, base, control, "beta", 512, model=FLUX),
    ]


@pytest.mark.parametrize("path", USAGE_PATHS)
@pytest.mark.usefixtures("two_users")
def test_totals(http: requests.Session, base: str, path: str) -> None:
    response = usage(http, base, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    total = str(2 * USD_1024 + USD_512)
    assert response.json() == {
        "clientId": APP_ID,
        "source": "openmeter",
        "period": {"start": None, "end": None},
        "totals": {
            "requestCount": 3,
            "currency": "USD",
            "networkFeeUsdMicros": total,
            "ownerChargeUsdMicros": total,
            "platformFeeUsdMicros": "0",
        },
    }


@pytest.mark.usefixtures("two_users")
def test_group_by_user(http: requests.Session, base: str) -> None:
    body = usage(http, base, groupBy="user").json()
    assert body["byUser"] == [
        {"endUserId": "alpha", "externalUserId": "alpha", "userType": "system_managed",
         "identifier": "alpha", "currency": "USD", "networkFeeUsdMicros": "30000",
         "ownerChargeUsdMicros": "30000", "requestCount": 2},
        {"endUserId": "beta", "externalUserId": "beta", "userType": "system_managed",
         "identifier": "beta", "currency": "USD", "networkFeeUsdMicros": "3750",
         "ownerChargeUsdMicros": "3750", "requestCount": 1},
    ]  # fmt: skip
    filtered = usage(http, base, groupBy="user", userId="beta").json()
    assert [row["externalUserId"] for row in filtered["byUser"]] == ["beta"]
    assert filtered["totals"]["networkFeeUsdMicros"] == "3750"
    # pymthouse/pymthouse src/lib/openmeter/usage-read.ts aggregateUserRows: a filtered user
    # without usage still gets one zero row.
    nobody = usage(http, base, groupBy="user", userId="nobody").json()
    assert nobody["byUser"] == [
        {"endUserId": "nobody", "externalUserId": "nobody", "userType": "system_managed",
         "identifier": "nobody", "currency": "USD", "networkFeeUsdMicros": "0",
         "ownerChargeUsdMicros": "0", "requestCount": 0},
    ]  # fmt: skip
    assert nobody["totals"]["requestCount"] == 0


def test_group_by_pipeline_model_daily_and_manifest(
    http: requests.Session, base: str, two_users: list[str]
) -> None:
    # The collector records pipeline from the payment type and model_id "unknown".
    by_model = usage(http, base, groupBy="pipeline_model").json()["byPipelineModel"]
    assert by_model == [
        {"pipeline": "fixed", "modelId": "unknown", "currency": "USD", "requestCount": 3,
         "networkFeeUsdMicros": "33750", "ownerChargeUsdMicros": "33750"},
    ]  # fmt: skip

    response = usage(http, base, groupBy="daily_pipeline")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "userId is required when groupBy=daily_pipeline"},
    )
    daily = usage(http, base, groupBy="daily_pipeline", userId="alpha").json()["byDailyPipeline"]
    assert daily == [
        {"pipeline": "fixed", "modelId": "unknown", "date": TODAY, "requestCount": 2,
         "currency": "USD", "networkFeeUsdMicros": "30000", "ownerChargeUsdMicros": "30000"}
    ]  # fmt: skip

    manifests = usage(http, base, groupBy="manifest", userId="alpha").json()["byManifest"]
    assert [row["manifestId"] for row in manifests] == two_users[:2]
    assert list(manifests[0]) == [
        "manifestId", "currency", "networkFeeUsdMicros", "networkFeeUsdExact",
        "ownerChargeUsdMicros", "feeWei", "billableSecs", "pipeline", "modelId",
    ]  # fmt: skip
    assert [row["feeWei"] for row in manifests] == [str(FEE_1024), str(FEE_1024)]
    # networkFeeUsdExact is USD micros with a fraction (pymthouse formatExactUsdMicros).
    assert manifests[0]["networkFeeUsdExact"] == "14999.998169088"
    assert manifests[0]["networkFeeUsdMicros"] == "15000"
    assert sum(int(row["feeWei"]) for row in manifests) == 2 * FEE_1024

    unknown = usage(http, base, groupBy="bogus").json()
    assert set(unknown) == {"clientId", "source", "period", "totals"}


@pytest.mark.usefixtures("two_users")
def test_date_filters(http: requests.Session, base: str) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    body = usage(http, base, startDate=TODAY, endDate=tomorrow).json()
    assert body["period"] == {"start": TODAY, "end": tomorrow}
    assert body["totals"]["requestCount"] == 3
    future = usage(http, base, startDate=tomorrow).json()
    assert future["totals"] == {
        "requestCount": 0, "currency": "USD", "networkFeeUsdMicros": "0",
        "ownerChargeUsdMicros": "0", "platformFeeUsdMicros": "0",
    }  # fmt: skip
    assert usage(http, base, endDate=TODAY).json()["totals"]["requestCount"] == 0

    response = usage(http, base, startDate="not-a-date")
    assert (response.status_code, response.json()) == (400, {"error": "Invalid startDate format"})
    response = usage(http, base, endDate="2026-13-45")
    assert (response.status_code, response.json()) == (400, {"error": "Invalid endDate format"})


def m2m_bearer(http: requests.Session, base: str) -> dict[str, str]:
    token = http.post(
        f"{base}/api/v1/oidc/token",
        auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "users:read"},
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", [*USAGE_PATHS, *BALANCE_PATHS, "/api/v1/apps/{app}/identities"])
def test_any_auth_failure_is_404(http: requests.Session, base: str, path: str) -> None:
    url = base + path.format(app=APP_ID)
    params = {"externalUserId": "x"}
    not_found = {"error": "Not found"}
    attempts = [
        http.get(url, params=params),
        http.get(url, params=params, auth=(M2M_ID, "nope")),
        http.get(url, params=params, auth=(APP_ID, BASIC[1])),
        http.get(url, params=params, headers=m2m_bearer(http, base)),
        http.get(base + path.format(app="app_a48e23c27a31a63d0b4996f2"), params=params, auth=BASIC),
    ]
    assert [(r.status_code, r.json()) for r in attempts] == [(404, not_found)] * len(attempts)


def test_lag_hides_fresh_events(http: requests.Session, base: str, control: SandboxControl) -> None:
    control.set_config(usageLagSeconds=1.0)
    generate(http, base, control, "alpha", 512)
    assert usage(http, base).json()["totals"]["requestCount"] == 0
    assert len(control.events()) == 1
    identities = http.get(f"{base}/api/v1/apps/{APP_ID}/identities", auth=BASIC).json()
    assert identities["identities"][0]["requestCount"] == 0
    time.sleep(1.1)
    assert usage(http, base).json()["totals"]["requestCount"] == 1


def test_openmeter_absent_switch(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.set_config(openMeterEnabled=False)
    absent = {"error": "OpenMeter not configured (OPENMETER_URL required)"}
    for path in USAGE_PATHS:
        response = usage(http, base, path, groupBy="user")
        assert (response.status_code, response.json()) == (503, absent)
    for path in BALANCE_PATHS:
        response = usage(http, base, path, externalUserId="alpha")
        assert (response.status_code, response.json()) == (
            503,
            {"error": "OpenMeter not configured"},
        )
    response = http.get(f"{base}/api/v1/apps/{APP_ID}/identities", auth=BASIC)
    assert (response.status_code, response.json()) == (503, absent)
    control.set_config(openMeterEnabled=True)
    assert usage(http, base).status_code == 200


@pytest.mark.parametrize("path", BALANCE_PATHS)
def test_balance(http: requests.Session, base: str, control: SandboxControl, path: str) -> None:
    generate(http, base, control, "alpha", 1024)
    response = usage(http, base, path, externalUserId="alpha")
    assert response.status_code == 200
    assert response.json() == {
        "externalUserId": "alpha",
        "balanceUsdMicros": "4985000",
        "remainingUsdMicros": "4985000",
        "lifetimeGrantedUsdMicros": "5000000",
        "consumedUsdMicros": "15000",
        "hasAccess": True,
    }
    control.set_balance("alpha", 0)
    drained = usage(http, base, path, externalUserId="alpha").json()
    assert (drained["balanceUsdMicros"], drained["consumedUsdMicros"], drained["hasAccess"]) == (
        "0",
        "15000",
        False,
    )
    missing = usage(http, base, path)
    assert (missing.status_code, missing.json()) == (400, {"error": "externalUserId is required"})
    nobody = usage(http, base, path, externalUserId="nobody").json()
    assert (nobody["balanceUsdMicros"], nobody["hasAccess"]) == ("0", False)


@pytest.mark.usefixtures("two_users")
def test_identities(http: requests.Session, base: str) -> None:
    provision(http, base, "gamma", email="gamma@example.test")
    response = http.get(f"{base}/api/v1/apps/{APP_ID}/identities", auth=BASIC)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["appId", "appName", "cycle", "identities"]
    assert body["appId"] == APP_ID
    assert body["cycle"]["start"].endswith("-01T00:00:00.000Z")
    rows = body["identities"]
    assert [row["externalUserId"] for row in rows] == ["alpha", "beta", "gamma"]
    alpha = rows[0]
    assert list(alpha) == [
        "externalUserId", "appUserId", "label", "email", "status", "provisioned", "apiKey",
        "apiKeyCount", "requestCount", "networkFeeUsdMicros", "billableSecs", "lastActiveDate",
        "createdAt",
    ]  # fmt: skip
    assert (alpha["requestCount"], alpha["networkFeeUsdMicros"]) == (2, "30000")
    assert (alpha["status"], alpha["provisioned"], alpha["lastActiveDate"]) == (
        "active",
        True,
        TODAY,
    )
    gamma = rows[2]
    assert (gamma["email"], gamma["requestCount"], gamma["lastActiveDate"]) == (
        "gamma@example.test",
        0,
        None,
    )
    response = http.get(
        f"{base}/api/v1/apps/{APP_ID}/identities",
        auth=BASIC,
        params={"startDate": "2026-01-01", "endDate": "2027-06-01"},
    )
    assert (response.status_code, response.json()) == (400, {"error": "Invalid date range"})


def test_manifest_row_ceils_the_exact_sum_not_each_event() -> None:
    """pymthouse usage-read.ts: networkFeeUsdMicros = ceilExactUsdMicrosSum(exact) and
    networkFeeUsdExact = formatExactUsdMicros(exact) over the manifest's summed exact micros."""
    eth_usd = Decimal("3000")

    def event(fee_wei: int) -> UsageEvent:
        return UsageEvent(
            event_id=f"e-{fee_wei}", timestamp=0.0, external_user_id="alpha",
            gateway_request_id=None, pipeline="live-video-to-video", model_id="unknown",
            manifest_id="m-live", fee_wei=fee_wei,
            usd_micros=usd_micros_for_fee(fee_wei, eth_usd),
            usd_micros_exact=usd_micros_exact(fee_wei, eth_usd), pixels=0, source="test",
        )  # fmt: skip

    # about 0.5 micros each: per-event ceilings sum to 3, the exact sum is 1.5 -> 2
    events = [event(166_666_667), event(166_666_667), event(166_666_666)]
    assert sum(e.usd_micros for e in events) == 3
    (row,) = usage_routes._manifest_rows(events, [])
    assert row["networkFeeUsdExact"] == "1.5"
    assert (row["networkFeeUsdMicros"], row["ownerChargeUsdMicros"]) == ("2", "2")
    assert row["feeWei"] == "500000000"


def test_seeded_manifest_rows_carry_exact_micros(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    """Seeded amounts are whole micros, so networkFeeUsdExact is the same integer string."""
    past = time.time() - 3600
    control.seed_usage(
        [{"externalUserId": "seeded", "manifestId": "m-seed", "feeWei": "4768371000000",
          "usdMicros": "30000000", "time": past},
         {"externalUserId": "seeded", "manifestId": "m-zero", "feeWei": "0",
          "usdMicros": "0", "time": past}]
    )  # fmt: skip
    rows = usage(http, base, groupBy="manifest", userId="seeded").json()["byManifest"]
    assert [(r["manifestId"], r["networkFeeUsdMicros"], r["networkFeeUsdExact"]) for r in rows] == [
        ("m-seed", "30000000", "30000000"),
        ("m-zero", "0", "0"),
    ]


def test_manifest_rows_without_user_id_cover_the_app_merged_by_manifest_id(
    http: requests.Session, base: str, control: SandboxControl, two_users: list[str]
) -> None:
    """pymthouse's aggregateManifestRows with no user filter: every manifest of the app in
    one answer, one row per manifestId (rows carry no user id), a manifest id metered for
    two users summed into one row whose pipeline/model are the first seen."""
    past = time.time() - 3600
    control.seed_usage(
        [{"externalUserId": "gamma", "manifestId": "m-shared", "feeWei": "10", "usdMicros": "2",
          "pipeline": "text-to-image", "modelId": "first", "time": past},
         {"externalUserId": "delta", "manifestId": "m-shared", "feeWei": "5", "usdMicros": "3",
          "pipeline": "other", "modelId": "second", "time": past},
         # the same id as one of alpha's live manifests: merged with its events too
         {"externalUserId": "delta", "manifestId": two_users[0], "feeWei": "7",
          "usdMicros": "1", "time": past}]
    )  # fmt: skip
    rows = usage(http, base, groupBy="manifest").json()["byManifest"]
    by_id = {row["manifestId"]: row for row in rows}
    assert len(rows) == len(by_id) == 4
    assert set(by_id) == {*two_users, "m-shared"}
    assert all("externalUserId" not in row for row in rows)
    shared = by_id["m-shared"]
    assert (shared["feeWei"], shared["networkFeeUsdMicros"], shared["networkFeeUsdExact"]) == (
        "15", "5", "5",
    )  # fmt: skip
    assert (shared["pipeline"], shared["modelId"]) == ("text-to-image", "first")
    merged = by_id[two_users[0]]
    assert merged["feeWei"] == str(FEE_1024 + 7)
    assert merged["networkFeeUsdExact"] == "15000.998169088"
    assert merged["networkFeeUsdMicros"] == "15001"
    # with userId only that user's part of a shared manifest is summed
    gamma = usage(http, base, groupBy="manifest", userId="gamma").json()["byManifest"]
    assert [(row["manifestId"], row["feeWei"]) for row in gamma] == [("m-shared", "10")]
    alpha = usage(http, base, groupBy="manifest", userId="alpha").json()["byManifest"]
    assert {row["manifestId"]: row["feeWei"] for row in alpha}[two_users[0]] == str(FEE_1024)


def test_generated_usage_spread_over_days_is_read_per_day_window(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    """``generate.days`` puts user i's rows i % days days back; a day window without
    userId returns exactly that day's manifests, and the windows add up to the whole."""
    now = time.time() - 3600
    control.seed_usage(
        generate={"users": 6, "manifestsPerUser": 2, "prefix": "spread-", "days": 3, "time": now}
    )
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    seen: list[str] = []
    for back in range(3):
        day = today - timedelta(days=back)
        rows = usage(
            http, base, groupBy="manifest",
            startDate=day.isoformat(), endDate=(day + timedelta(days=1)).isoformat(),
        ).json()["byManifest"]  # fmt: skip
        users = {row["manifestId"].rsplit("-m", 1)[0] for row in rows}
        assert users == {f"spread-{index:07d}" for index in range(6) if index % 3 == back}
        seen += [row["manifestId"] for row in rows]
    assert len(seen) == len(set(seen)) == 12
    everything = usage(http, base, groupBy="manifest").json()["byManifest"]
    assert sorted(row["manifestId"] for row in everything) == sorted(seen)
