"""The /__sandbox/ control API: faults, latency, request log, config, balances, reset."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.sandbox.helpers import (
    APP_ID,
    BASIC,
    FLUX,
    FLUX_RUNNER,
    M2M_ID,
    M2M_SECRET,
    SDXL_RUNNER,
    paid_call,
    provision,
    signer_session,
)
from tests.sandbox_server import SandboxControl, SandboxError

HEALTH = "/api/v1/health"


def test_status_fault_with_body_headers_and_times(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    fault_id = control.add_fault(
        "POST",
        "/api/v1/oidc/token",
        status=503,
        body={"error": "temporarily_unavailable"},
        headers={"Retry-After": "7"},
        times=2,
    )
    assert len(fault_id) == 12
    data = {"grant_type": "client_credentials", "scope": "users:read"}
    statuses = []
    for _ in range(3):
        response = http.post(f"{base}/api/v1/oidc/token", data=data, auth=BASIC)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.json() == {"error": "temporarily_unavailable"}
            assert response.headers["retry-after"] == "7"
            assert response.headers["content-type"] == "application/json"
    assert statuses == [503, 503, 200]
    # Method filter: a GET on the same path is not affected by a POST fault.
    control.add_fault("POST", HEALTH, status=500)
    assert http.get(f"{base}{HEALTH}").status_code == 200


def test_prefix_and_string_body_and_clear(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.add_fault("*", "/signer/*", status=480, body="refresh",
                      headers={"Livepeer-Orchestrator-URL": "http://orch.example"})  # fmt: skip
    response = http.post(f"{base}/signer/generate-live-payment", json={})
    assert response.status_code == 480
    assert response.text == "refresh"
    assert response.headers["livepeer-orchestrator-url"] == "http://orch.example"
    assert http.get(f"{base}/signer/discover-orchestrators").status_code == 480
    control.clear_faults()
    assert http.get(f"{base}/signer/discover-orchestrators").status_code == 401


def test_delay_only_fault_then_serves_normally(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.add_fault("GET", HEALTH, delay=0.5, times=1)
    started = time.monotonic()
    response = http.get(f"{base}{HEALTH}")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    http.get(f"{base}{HEALTH}")
    assert time.monotonic() - started < 0.5


def test_delay_beyond_client_timeout(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.add_fault("GET", HEALTH, delay=1.0, times=1)
    with pytest.raises(requests.ReadTimeout):
        http.get(f"{base}{HEALTH}", timeout=0.3)


def test_drop_closes_the_connection_without_a_response(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.add_fault("POST", "/api/v1/oidc/token", drop=True, times=1)
    data = {"grant_type": "client_credentials", "scope": "users:read"}
    with pytest.raises(requests.ConnectionError) as caught:
        http.post(f"{base}/api/v1/oidc/token", data=data, auth=BASIC)
    assert not isinstance(caught.value, requests.HTTPError)
    assert http.post(f"{base}/api/v1/oidc/token", data=data, auth=BASIC).status_code == 200
    [dropped, served] = control.requests(path="/api/v1/oidc/token")
    assert (dropped["status"], dropped["dropped"]) == (None, True)
    assert (served["status"], served["dropped"]) == (200, False)


def test_invalid_faults_are_rejected(control: SandboxControl) -> None:
    with pytest.raises(SandboxError, match="400"):
        control.add_fault("GET", HEALTH)
    with pytest.raises(SandboxError, match="400"):
        control.add_fault("GET", "no-slash", status=500)
    with pytest.raises(SandboxError, match="400"):
        control.add_fault("GET", HEALTH, status=500, times=0)


def test_global_latency(http: requests.Session, base: str, control: SandboxControl) -> None:
    control.set_config(latencySeconds=0.3)
    started = time.monotonic()
    http.get(f"{base}{HEALTH}")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    control.config()  # control calls are never delayed
    assert time.monotonic() - started < 0.3


def test_request_log_records_callers_without_secrets(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    session = signer_session(http, base, "logged-user")
    provision(http, base, "logged-user")
    http.get(f"{base}/signer/discover-orchestrators",
             headers={"Authorization": f"Bearer {session['access_token']}"})  # fmt: skip
    http.get(f"{base}{HEALTH}", params={"x": "1"})

    log = control.requests()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", "/api/v1/oidc/token", 200),
        ("POST", f"/api/v1/apps/{APP_ID}/users", 200),
        ("GET", "/signer/discover-orchestrators", 200),
        ("GET", HEALTH, 200),
    ]
    assert (log[0]["auth"], log[0]["clientId"]) == ("basic", M2M_ID)
    assert (log[2]["auth"], log[2]["clientId"], log[2]["externalUserId"]) == (
        "bearer",
        APP_ID,
        "logged-user",
    )
    assert (log[3]["auth"], log[3]["clientId"], log[3]["query"]) == (None, None, "x=1")
    assert set(log[0]) == {
        "method", "path", "query", "peer", "host", "auth", "clientId", "externalUserId",
        "status", "time", "faultId", "dropped", "answerLost",
    }  # fmt: skip
    # One keep-alive session: every request came over one connection, from loopback.
    assert len({r["peer"] for r in log}) == 1
    assert str(log[0]["peer"]).startswith("127.0.0.1:")
    assert {r["host"] for r in log} == {base.removeprefix("http://")}
    dumped = json.dumps(log)
    assert M2M_SECRET not in dumped
    assert session["access_token"] not in dumped
    assert [r["path"] for r in control.requests(path="/signer")] == [
        "/signer/discover-orchestrators"
    ]
    control.clear_requests()
    assert control.requests() == []


def test_config_roundtrip_and_validation(control: SandboxControl) -> None:
    defaults = control.config()
    assert {key: defaults[key] for key in (
        "usageLagSeconds", "ethUsd", "runnerLatencySeconds", "latencySeconds",
        "openMeterEnabled", "runnerMode", "defaultBalanceUsdMicros", "discoveryEmpty", "appId",
        "m2mClientId",
    )} == {
        "usageLagSeconds": 0.0, "ethUsd": "3000", "runnerLatencySeconds": 0.0,
        "latencySeconds": 0.0, "openMeterEnabled": True, "runnerMode": "sync",
        "defaultBalanceUsdMicros": "5000000", "discoveryEmpty": False, "appId": APP_ID,
        "m2mClientId": M2M_ID,
    }  # fmt: skip
    assert "m2mClientSecret" not in defaults
    assert "pricePerPixelWei" not in defaults  # no per-pixel price exists on the network
    updated = control.set_config(ethUsd="3000.50", discoveryEmpty=True, runnerMode="queue")
    assert (updated["ethUsd"], updated["discoveryEmpty"], updated["runnerMode"]) == (
        "3000.50",
        True,
        "queue",
    )
    bad_updates = [
        {"runnerMode": "async"},
        {"nope": 1},
        {"pricePerPixelWei": 10},
        {"discoveryEmpty": "yes"},
        {"ethUsd": "-1"},
        {"openMeterEnabled": "yes"},
        {"usageLagSeconds": -1},
    ]
    for bad in bad_updates:
        with pytest.raises(SandboxError, match="400"):
            control.set_config(**bad)
    assert control.config()["runnerMode"] == "queue"


def test_eth_usd_and_price_drive_usd_micros_exactly(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.set_config(ethUsd="3000.123456789")
    control.set_runner(SDXL_RUNNER, price=64_000_000_448)
    _, response = paid_call(http, base, "rate-user", price=64_000_000_448)
    assert response.status_code == 200, response.text
    [event] = control.events()
    assert event["feeWei"] == "64000000448"
    # 64_000_000_448 * 3000.123456789 / 10**12 = 192.0079026225... -> 193
    assert event["usdMicros"] == "193"


def test_runner_control_roundtrip_and_validation(control: SandboxControl) -> None:
    runners = control.runners()
    assert [(r["id"], r["unit"], r["price"], r["capacity"]) for r in runners] == [
        (SDXL_RUNNER, "fixed", "4768371000000", 100),
        ("bytedance-sdxl-lightning-2", "fixed", "4768371000000", 100),
        (FLUX_RUNNER, "fixed", "4768371000000", 100),
        ("black-forest-labs-flux-1-schnell-2", "fixed", "4768371000000", 100),
    ]
    huge = 2**64 + 7
    updated = control.set_runner(SDXL_RUNNER, unit="seconds", price=str(huge), capacity=0)
    assert (updated["unit"], updated["price"], updated["capacity"]) == ("seconds", str(huge), 0)
    fault = {"kind": "image-url", "host": "169.254.169.254", "times": 2}
    assert control.set_runner(SDXL_RUNNER, appFault=fault)["appFault"] == fault
    for bad in (
        {"price": 1.5},
        {"price": 0},
        {"capacity": -1},
        {"unit": ""},
        {"nope": 1},
        {"appFault": {"kind": "melt"}},
        {"appFault": {"kind": "redirect", "status": 200}},
        {"manifestIdLength": 7},
    ):
        with pytest.raises(SandboxError, match="400"):
            control.set_runner(SDXL_RUNNER, **bad)
    assert control.runners()[0]["price"] == str(huge)
    with pytest.raises(SandboxError, match="404"):
        control.set_runner("nope", price=1)

    long_id = "r" + "x" * 3000
    added = control.add_runner(long_id, model=FLUX, price=5)
    assert (added["id"], added["app"], added["price"]) == (long_id, f"image-generation/{FLUX}", "5")
    with pytest.raises(SandboxError, match="400"):
        control.add_runner(long_id)
    with pytest.raises(SandboxError, match="400"):
        control.add_runner("bad/id")
    control.remove_runner(long_id)
    control.reset()
    assert control.runners() == runners


def test_balances_users_and_reset(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    created = control.set_balance("new-user", 123)
    assert (created["externalUserId"], created["balanceUsdMicros"], created["status"]) == (
        "new-user",
        "123",
        "active",
    )
    assert created["lifetimeGrantedUsdMicros"] == "123"
    control.set_config(defaultBalanceUsdMicros="7", usageLagSeconds=5)
    provision(http, base, "seven", email="s@example.test")
    assert [(u["externalUserId"], u["balanceUsdMicros"], u["email"]) for u in control.users()] == [
        ("new-user", "123", None),
        ("seven", "7", "s@example.test"),
    ]
    control.add_fault("GET", HEALTH, status=500)

    control.reset()
    assert control.users() == []
    assert control.events() == []
    assert control.requests() == []
    assert control.config()["defaultBalanceUsdMicros"] == "5000000"
    assert control.config()["usageLagSeconds"] == 0.0
    assert http.get(f"{base}{HEALTH}").status_code == 200
    with pytest.raises(SandboxError, match="400"):
        control.set_balance("x", 1.5)  # type: ignore[arg-type]


def test_fault_bodies_are_served_as_sent(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    body = {"feeWei": 1e21, "ratio": 0.1, "big": 2**256 - 1, "nested": [{"x": None}]}
    control.add_fault("GET", "/api/v1/builder/apps/*", status=200, body=body)
    response = http.get(f"{base}/api/v1/builder/apps/{APP_ID}/usage")
    assert response.text == (
        '{"feeWei":1e+21,"ratio":0.1,"big":' + str(2**256 - 1) + ',"nested":[{"x":null}]}'
    )
