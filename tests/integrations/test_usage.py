"""Usage and balance: typed rows, exact integer money, the deliberate 404."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from django.conf import settings as django_settings

from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseClient,
    PymthouseProtocolError,
    PymthouseUnavailableError,
    UsageReport,
)
from tests.integrations.conftest import builder_path, calls
from tests.sandbox.helpers import FLUX_RUNNER, SDXL_RUNNER, paid_call
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
BALANCE = builder_path("/usage/balance")
MAX_UINT256 = 2**256 - 1


def _paid_runner_call(sandbox: SandboxControl, external_user_id: str, *, runner: str) -> None:
    """One paid live-runner call (challenge, signer ticket, paid call): how usage exists."""
    with requests.Session() as http:
        http.trust_env = False
        _params, response = paid_call(http, sandbox.url, external_user_id, runner=runner,
                                      price=_runner_price(sandbox, runner))  # fmt: skip
    assert response.status_code == 200, response.text


def _runner_price(sandbox: SandboxControl, runner_id: str) -> int:
    (runner,) = [r for r in sandbox.runners() if r["id"] == runner_id]
    return int(runner["price"])


def _query(record: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(record["query"], keep_blank_values=True)


def _usage_body(**rows: Any) -> dict[str, Any]:
    return {
        "clientId": django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
        "source": "openmeter",
        "period": {"start": None, "end": None},
        "totals": {
            "requestCount": 4,
            "currency": "USD",
            "networkFeeUsdMicros": "3500010",
            "ownerChargeUsdMicros": "3500010",
            "platformFeeUsdMicros": "0",
        },
        **rows,
    }


# --- the real sandbox -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group_by", "rows_attribute"),
    [("none", None), ("user", "by_user"), ("pipeline_model", "by_pipeline_model"),
     ("manifest", "by_manifest")],
)  # fmt: skip
def test_empty_usage_for_each_group_by(
    client: PymthouseClient, sandbox: SandboxControl, group_by: Any, rows_attribute: str | None
) -> None:
    report = client.usage(group_by=group_by)

    assert isinstance(report, UsageReport)
    assert report.client_id == django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID
    assert report.source == "openmeter"
    assert (report.period.start, report.period.end) == (None, None)
    assert report.totals.request_count == 0
    assert report.totals.network_fee_usd_micros == 0
    assert report.totals.platform_fee_usd_micros == 0
    assert report.totals.currency == "USD"
    assert (report.by_user, report.by_pipeline_model, report.by_manifest) == ((), (), ())
    (record,) = calls(sandbox, "GET", USAGE)
    assert record["auth"] == "basic"
    assert _query(record) == {"groupBy": [group_by]}


def test_usage_sends_filters_as_the_contract_names_them(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    start = datetime(2026, 8, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    report = client.usage(group_by="user", user_id="py-user-001", start=start, end=date(2026, 9, 1))

    assert report.period.start == "2026-08-01T00:00:00Z"
    assert report.period.end == "2026-09-01"
    (record,) = calls(sandbox, "GET", USAGE)
    assert _query(record) == {
        "groupBy": ["user"],
        "userId": ["py-user-001"],
        "startDate": ["2026-08-01T00:00:00Z"],
        "endDate": ["2026-09-01"],
    }


def test_naive_datetimes_and_unknown_group_by_are_refused(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    with pytest.raises(ValueError):
        client.usage(start=datetime(2026, 8, 1))
    with pytest.raises(ValueError):
        client.usage(group_by="daily_pipeline")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.usage(user_id="someone@example.test")
    assert sandbox.requests() == []


def test_usage_auth_failure_404_is_an_auth_error(sandbox: SandboxControl, settings: Any) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "2" * 64
    client = PymthouseClient.from_settings()

    for call in (client.usage, lambda: client.balance(external_user_id="u-1")):
        with pytest.raises(PymthouseAuthError) as excinfo:
            call()
        error = excinfo.value
        assert (error.status, error.code, error.description) == (404, None, "Not found")
        assert error.retryable is False

    # A GET 404 is never retried.
    assert len(calls(sandbox, "GET", USAGE)) == 1
    assert len(calls(sandbox, "GET", BALANCE)) == 1


def test_openmeter_absent_is_unavailable(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.set_config(openMeterEnabled=False)

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.usage(group_by="user")
    assert excinfo.value.status == 503
    assert excinfo.value.description == "OpenMeter not configured (OPENMETER_URL required)"
    assert excinfo.value.retryable is True

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.balance(external_user_id="u-1")
    assert excinfo.value.description == "OpenMeter not configured"

    # GET 503 is retried by urllib3 (PYMTHOUSE_MAX_RETRIES=2) before giving up.
    attempts = 1 + django_settings.PYMTHOUSE_MAX_RETRIES
    assert [r["status"] for r in calls(sandbox, "GET", USAGE)] == [503] * attempts
    assert [r["status"] for r in calls(sandbox, "GET", BALANCE)] == [503] * attempts


def test_invalid_date_is_a_bad_request(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", USAGE, status=400, body={"error": "Invalid startDate format"})
    with pytest.raises(PymthouseBadRequestError) as excinfo:
        client.usage(start=date(2026, 8, 1))
    assert excinfo.value.description == "Invalid startDate format"


def test_balance_is_typed_and_exact(client: PymthouseClient, sandbox: SandboxControl) -> None:
    client.upsert_user(external_user_id="py-user-001")
    sandbox.set_balance("py-user-001", 4_780_000)

    balance = client.balance(external_user_id="py-user-001")

    assert balance.external_user_id == "py-user-001"
    assert balance.balance_usd_micros == 4_780_000
    assert balance.remaining_usd_micros == 4_780_000
    assert balance.lifetime_granted_usd_micros == 4_780_000
    assert balance.consumed_usd_micros == 0
    assert balance.has_access is True
    (record,) = calls(sandbox, "GET", BALANCE)
    assert _query(record) == {"externalUserId": ["py-user-001"]}

    sandbox.set_balance("py-user-001", 0)
    assert client.balance(external_user_id="py-user-001").has_access is False


def test_negative_balance_is_kept_signed(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.set_balance("debtor", -120_000)

    balance = client.balance(external_user_id="debtor")

    assert balance.balance_usd_micros == -120_000
    assert balance.has_access is False


def test_usage_of_real_inference_for_each_group_by(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    # Fixed prices big enough that fees exceed 2**53 wei (a float would round them).
    sdxl_price, flux_price = 10**15 + 7, 3 * 10**15 + 11
    sandbox.set_runner(SDXL_RUNNER, price=str(sdxl_price))
    sandbox.set_runner(FLUX_RUNNER, price=str(flux_price))
    sandbox.set_balance("alice", 10**18)
    sandbox.set_balance("bob", 10**18)
    _paid_runner_call(sandbox, "alice", runner=SDXL_RUNNER)
    _paid_runner_call(sandbox, "alice", runner=FLUX_RUNNER)
    _paid_runner_call(sandbox, "bob", runner=SDXL_RUNNER)
    events = sandbox.events()
    assert len(events) == 3
    micros_by_user: dict[str, int] = defaultdict(int)
    for event in events:
        micros_by_user[event["externalUserId"]] += int(event["usdMicros"])
    total = sum(micros_by_user.values())

    flat = client.usage()
    assert (flat.totals.request_count, flat.totals.network_fee_usd_micros) == (3, total)

    by_user = {row.external_user_id: row for row in client.usage(group_by="user").by_user}
    assert {user: (row.request_count, row.network_fee_usd_micros)
            for user, row in by_user.items()} == {
        "alice": (2, micros_by_user["alice"]),
        "bob": (1, micros_by_user["bob"]),
    }  # fmt: skip

    # The metering collector does not know the model: every row is model "unknown",
    # pipeline from the payment type (docs/upstream.md, usage attribution).
    by_model = client.usage(group_by="pipeline_model").by_pipeline_model
    assert {(row.pipeline, row.model_id, row.request_count) for row in by_model} == {
        ("fixed", "unknown", 3)
    }
    assert sum(row.network_fee_usd_micros for row in by_model) == total

    manifests = client.usage(group_by="manifest", user_id="alice").by_manifest
    assert {row.manifest_id: row.fee_wei for row in manifests} == {
        event["manifestId"]: int(event["feeWei"])
        for event in events
        if event["externalUserId"] == "alice"
    }
    assert sorted(row.fee_wei for row in manifests) == [sdxl_price, flux_price]


def test_usage_lags_behind_inference(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.set_config(usageLagSeconds=60)
    _paid_runner_call(sandbox, "alice", runner=SDXL_RUNNER)

    report = client.usage(group_by="user")

    assert len(sandbox.events()) == 1
    assert (report.totals.request_count, report.by_user) == (0, ())


# --- exact money through the parser, over HTTP --------------------------------------------


def test_grouped_rows_are_typed_with_exact_integers(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    by_user = [
        {"endUserId": "alpha-ext", "externalUserId": "alpha-ext", "userType": "system_managed",
         "identifier": "alpha-ext", "currency": "USD", "networkFeeUsdMicros": "3000000",
         "ownerChargeUsdMicros": "3000000", "requestCount": 2, "futureField": [1, 2]},
        {"endUserId": "unknown", "externalUserId": "unknown", "userType": "system_managed",
         "identifier": "unknown", "currency": "USD", "networkFeeUsdMicros": "10",
         "ownerChargeUsdMicros": "10", "requestCount": 1},
    ]  # fmt: skip
    sandbox.add_fault("GET", USAGE, status=200, body=_usage_body(byUser=by_user), times=1)

    report = client.usage(group_by="user")

    assert report.totals.request_count == 4
    assert report.totals.network_fee_usd_micros == 3_500_010
    assert report.totals.owner_charge_usd_micros == 3_500_010
    rows = [
        (row.external_user_id, row.request_count, row.network_fee_usd_micros)
        for row in report.by_user
    ]
    assert rows == [("alpha-ext", 2, 3_000_000), ("unknown", 1, 10)]
    assert report.by_user[0].end_user_id == "alpha-ext"


def test_pipeline_model_rows(client: PymthouseClient, sandbox: SandboxControl) -> None:
    rows = [
        {
            "pipeline": "text-to-image",
            "modelId": "ByteDance/SDXL-Lightning",
            "currency": "USD",
            "requestCount": 3,
            "networkFeeUsdMicros": "900000",
            "ownerChargeUsdMicros": "900000",
        }
    ]
    sandbox.add_fault("GET", USAGE, status=200, body=_usage_body(byPipelineModel=rows))

    (row,) = client.usage(group_by="pipeline_model").by_pipeline_model

    assert (row.pipeline, row.model_id, row.request_count, row.network_fee_usd_micros) == (
        "text-to-image",
        "ByteDance/SDXL-Lightning",
        3,
        900_000,
    )


@pytest.mark.parametrize("fee_wei", [10**30, 10**30 + 1, MAX_UINT256])
def test_manifest_rows_carry_exact_big_wei(
    client: PymthouseClient, sandbox: SandboxControl, fee_wei: int
) -> None:
    # networkFeeUsdExact is USD micros with a fraction (about $30), networkFeeUsdMicros
    # its ceiling: pymthouse src/lib/openmeter/usage-read.ts formatExactUsdMicros.
    row = {"manifestId": "m-1", "currency": "USD", "networkFeeUsdMicros": "29999997",
           "networkFeeUsdExact": "29999996.338176", "ownerChargeUsdMicros": "29999997",
           "feeWei": str(fee_wei), "billableSecs": "12.5", "pipeline": "text-to-image",
           "modelId": "ByteDance/SDXL-Lightning"}  # fmt: skip
    sandbox.add_fault("GET", USAGE, status=200, body=_usage_body(byManifest=[row]))

    (manifest,) = client.usage(group_by="manifest", user_id="alpha-ext").by_manifest

    assert manifest.fee_wei == fee_wei
    assert type(manifest.fee_wei) is int
    assert str(manifest.fee_wei) == str(fee_wei)
    assert manifest.network_fee_usd_exact_micros == Fraction(29_999_996_338_176, 10**6)
    assert type(manifest.network_fee_usd_exact_micros) is Fraction
    assert manifest.billable_secs == Decimal("12.5")
    assert manifest.network_fee_usd_micros == 29_999_997


@pytest.mark.parametrize(
    "fee_wei",
    ["1e30", "1E+30", "1.5", " 12 ", "１２３", "1_000", "-5", "", "1" + "0" * 78, str(2**256),
     1e21, 1.5, 10**30, None],
    ids=repr,
)  # fmt: skip
def test_manifest_fee_wei_garbage_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl, fee_wei: object
) -> None:
    row = {"manifestId": "m-1", "currency": "USD", "networkFeeUsdMicros": "1", "feeWei": fee_wei}
    sandbox.add_fault("GET", USAGE, status=200, body=_usage_body(byManifest=[row]))

    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.usage(group_by="manifest")

    assert "feeWei" in str(excinfo.value)
    assert excinfo.value.retryable is False


@pytest.mark.parametrize("fee", ["3500010.0", "3.5e6", 3500010.5, "NaN"], ids=repr)
def test_usd_micros_garbage_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl, fee: object
) -> None:
    body = _usage_body()
    body["totals"]["networkFeeUsdMicros"] = fee
    sandbox.add_fault("GET", USAGE, status=200, body=body)

    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.usage()
    assert "totals.networkFeeUsdMicros" in str(excinfo.value)


def test_missing_rows_for_the_requested_grouping_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", USAGE, status=200, body=_usage_body())
    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.usage(group_by="user")
    assert "byUser missing" in str(excinfo.value)


def test_non_json_success_body_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "GET", USAGE, status=200, body="<html>maintenance</html>",
        headers={"Content-Type": "text/html"},
    )  # fmt: skip
    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.usage()
    assert excinfo.value.status == 200
    assert "<html>" not in str(excinfo.value)


def test_json_nan_is_refused(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault(
        "GET",
        USAGE,
        status=200,
        body='{"totals": NaN}',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(PymthouseProtocolError):
        client.usage()
