"""``PymthouseClient.usage_manifests``: the app's manifests streamed, same grammar as the model."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from integrations.pymthouse import (
    ManifestRow,
    PymthouseAuthError,
    PymthouseClient,
    PymthouseProtocolError,
)
from integrations.pymthouse.client import _manifest_rows
from tests.integrations.conftest import builder_path, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
MAX_UINT256 = 2**256 - 1


def _seed(sandbox: SandboxControl) -> None:
    past = time.time() - 3600
    sandbox.seed_usage(
        [
            {"externalUserId": "s-a", "manifestId": "m-1", "feeWei": str(MAX_UINT256),
             "usdMicros": "7", "time": past},
            {"externalUserId": "s-b", "manifestId": "m-2", "feeWei": "5", "usdMicros": "0",
             "pipeline": "p", "modelId": "x", "time": past - 86400},
        ]
    )  # fmt: skip


def test_streamed_rows_equal_the_model_rows_for_the_whole_app(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    _seed(sandbox)
    with client.usage_manifests() as rows:
        streamed = list(rows)
    model = client.usage(group_by="manifest").by_manifest
    assert streamed == [
        ManifestRow(
            manifest_id=row.manifest_id,
            network_fee_usd_micros=row.network_fee_usd_micros,
            fee_wei=row.fee_wei,
            network_fee_usd_exact_micros=row.network_fee_usd_exact_micros,
            pipeline=row.pipeline,
            model_id=row.model_id,
        )
        for row in model
    ]
    assert {row.manifest_id: row.fee_wei for row in streamed} == {"m-1": MAX_UINT256, "m-2": 5}
    (call, _) = calls(sandbox, "GET", USAGE)
    assert "userId" not in call["query"]
    assert "groupBy=manifest" in call["query"]


def test_a_day_window_is_sent_as_start_and_end(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    _seed(sandbox)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if time.time() - 3600 < day.timestamp():  # just after midnight: m-1 is yesterday's
        day -= timedelta(days=1)
    with client.usage_manifests(start=day, end=day + timedelta(days=1)) as rows:
        assert [row.manifest_id for row in rows] == ["m-1"]
    (call,) = calls(sandbox, "GET", USAGE)
    assert "startDate=" in call["query"]
    assert "endDate=" in call["query"]


def test_auth_failure_is_an_auth_error_before_any_row(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "2" * 64
    client = PymthouseClient.from_settings()
    with pytest.raises(PymthouseAuthError), client.usage_manifests() as rows:
        list(rows)


ROW = {"manifestId": "m", "currency": "USD", "networkFeeUsdMicros": "2",
       "networkFeeUsdExact": "1.5", "feeWei": "10", "pipeline": None}  # fmt: skip


def _parse(body: bytes, size: int = 3) -> list[ManifestRow]:
    return list(_manifest_rows(iter([body[i : i + size] for i in range(0, len(body), size)]),
                               path="/u"))  # fmt: skip


def test_parsing_survives_any_chunk_boundary_and_whitespace() -> None:
    body = json.dumps(
        {"clientId": "a", "totals": {"requestCount": 12345678901}, "byManifest": [ROW, ROW],
         "period": {"start": None}}, indent=1,
    ).encode()  # fmt: skip
    for size in (1, 2, 7, 64, len(body)):
        rows = _parse(body, size)
        got = [(row.manifest_id, row.fee_wei, row.network_fee_usd_exact_micros) for row in rows]
        assert got == [("m", 10, Fraction(3, 2)), ("m", 10, Fraction(3, 2))]
    assert _parse(b'{"byManifest": []}') == []
    assert _parse(b'{"clientId": "a"}') == []  # no rows key: no rows


@pytest.mark.parametrize(
    "body",
    [
        b'{"byManifest": [' + json.dumps({**ROW, "feeWei": "1e3"}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "feeWei": 1.5}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "feeWei": str(2**256)}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "networkFeeUsdMicros": "-1"}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "currency": None}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "manifestId": 5}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps({**ROW, "pipeline": 5}).encode() + b"]}",
        b'{"byManifest": [' + json.dumps(ROW).encode() + b"]",  # truncated
        b'{"byManifest": [' + json.dumps(ROW).encode() + b" 5]}",
        b'{"byManifest": {}}',
        b'{"byManifest": [NaN]}',
        b"[]",
        b'{"byManifest": ["\xff"]}',
    ],
)
def test_a_row_or_body_off_the_grammar_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(PymthouseProtocolError):
        _parse(body, 4)
