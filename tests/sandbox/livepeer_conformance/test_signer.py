"""The remote signer: GL server/remote_signer.go GenerateLivePayment.

GL = livepeer/go-livepeer@176aa415ccea4f9861e0dd44e981cda17fb36f52.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from tests.sandbox.helpers import (
    DEFAULT_PRICE,
    SDXL,
    SDXL_RUNNER,
    bearer,
    paid_headers,
)
from tests.sandbox.livepeer_conformance.support import (
    USER,
    Caller,
    assert_go_json,
)
from tests.sandbox_server import SandboxControl

# --- signer: GL server/remote_signer.go GenerateLivePayment ---


def test_signer_fixed_payment_fee_and_usage_event(caller: Caller, control: SandboxControl) -> None:
    params = caller.challenge()
    signed = caller.sign(
        params,
        gatewayRequestId="job-1",
        attributionSource="direct_api",
        pipeline="text-to-image",
        modelId=SDXL,
        paymentMetadataVersion="2026-04-usage-attribution-v1",
    )
    assert signed.status_code == 200, signed.text
    assert signed.text.endswith("\n")
    assert list(signed.json()) == ["payment", "segCreds", "state"]
    assert list(signed.json()["state"]) == ["State", "Sig"]
    [event] = control.events()
    # The metering collector (pymthouse/clearinghouse-runtime openmeter-collector/collector.yaml):
    # gateway_request_id = the signer's own request id, model_id "unknown", pipeline from type.
    assert re.fullmatch(r"[0-9a-f]{8}", event["gatewayRequestId"])
    assert event["gatewayRequestId"] != "job-1"
    assert (event["pipeline"], event["modelId"]) == ("fixed", "unknown")
    assert event["manifestId"] == params["manifest_id"]
    assert event["feeWei"] == str(DEFAULT_PRICE)  # fixed: billableUnits = 1
    assert event["usdMicros"] == "14306"  # ceil(4_768_371_000_000 * 3000 / 10**12)
    assert event["externalUserId"] == USER


def test_signer_live_payment_is_price_times_ten_seconds(
    caller: Caller, control: SandboxControl
) -> None:
    """GL server/remote_signer.go: type "live" bills ceil(secs), 10 s on the first payment."""
    control.set_runner(SDXL_RUNNER, unit="seconds", price=1_000_000_007)
    params, headers = caller.payment(unit="seconds", price=1_000_000_007)
    [event] = control.events()
    assert (event["feeWei"], event["pipeline"]) == ("10000000070", "live")
    response = caller.call(headers)
    assert response.status_code == 200, response.text
    assert event["manifestId"] == params["manifest_id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "", "inPixels": 1}, "maxPrice requires payment type live, lv2v, or fixed"),
        (
            {"maxPrice": {"price": str(DEFAULT_PRICE), "currency": "wei", "unit": "seconds"}},
            "maxPrice.unit must be fixed for payment type fixed",
        ),
        (
            {"type": "live"},  # maxPrice.unit "fixed" with type live
            "maxPrice.unit must be seconds for payment type live",
        ),
        (
            {"maxPrice": {"price": str(DEFAULT_PRICE), "currency": "usd", "unit": "fixed"}},
            "maxPrice.currency must be wei",
        ),
        (
            {"maxPrice": {"price": "0", "currency": "wei", "unit": "fixed"}},
            "maxPrice.price must be a positive decimal",
        ),
        ({"type": "pixel"}, "invalid job type"),
        ({"type": "", "maxPrice": None}, "missing billable unit or job type"),
        ({"orchestrator": ""}, "missing orchestrator"),
    ],
)
def test_signer_refuses_malformed_payments(
    caller: Caller, control: SandboxControl, change: dict[str, Any], message: str
) -> None:
    params = caller.challenge()
    body = {
        "orchestrator": params["payment_params"],
        "type": "fixed",
        "ManifestID": params["manifest_id"],
        "maxPrice": {"price": str(DEFAULT_PRICE), "currency": "wei", "unit": "fixed"},
        **change,
    }
    response = caller.http.post(
        f"{caller.base}/signer/generate-live-payment", headers=bearer(caller.token), json=body
    )
    assert_go_json(response, 400, message)
    assert control.events() == []


def test_signer_checks_the_payment_before_the_auth_webhook(caller: Caller) -> None:
    """GL: authLivePayment runs after the price checks, so a bad body is a 400 without a token."""
    params = caller.challenge()
    body = {
        "orchestrator": params["payment_params"],
        "type": "",
        "inPixels": 1,
        "maxPrice": {"price": "1", "currency": "wei", "unit": "fixed"},
    }
    response = caller.http.post(f"{caller.base}/signer/generate-live-payment", json=body)
    assert_go_json(response, 400, "maxPrice requires payment type live, lv2v, or fixed")
    good = {**body, "type": "fixed", "maxPrice": None}
    response = caller.http.post(f"{caller.base}/signer/generate-live-payment", json=good)
    assert_go_json(response, 401, "missing bearer token")


def test_signer_481_price_exceeded(caller: Caller, control: SandboxControl) -> None:
    params = caller.challenge()
    response = caller.sign(params, maxPrice={"price": "1000", "currency": "wei", "unit": "fixed"})
    assert_go_json(
        response,
        481,
        "orchestrator price 4768371000000.000 exceeds request maxPrice ceiling 1000.000",
    )
    assert control.events() == []


@pytest.mark.parametrize(
    ("unit", "price", "max_price", "status"),
    [
        ("fixed", DEFAULT_PRICE, str(DEFAULT_PRICE), 200),  # equal is within the ceiling
        ("fixed", DEFAULT_PRICE, str(DEFAULT_PRICE - 1), 481),
        ("fixed", DEFAULT_PRICE, f"{DEFAULT_PRICE - 1}.999", 481),  # exact rationals
        # Per unit, never per fee: a seconds payment buys 10 units at the price, and a
        # maxPrice equal to the price is enough (the fee is 10 × price).
        ("seconds", 1_000_000_007, "1000000007", 200),
        ("seconds", 1_000_000_007, "1000000006", 481),
    ],
)
def test_signer_481_compares_the_price_per_unit_like_go_livepeer(
    caller: Caller,
    control: SandboxControl,
    unit: str,
    price: int,
    max_price: str,
    status: int,
) -> None:
    """GL checkRemotePaymentPrice: refused exactly when pricePerUnit/pixelsPerUnit > maxPrice."""
    control.set_runner(SDXL_RUNNER, unit=unit, price=price)
    params = caller.challenge()
    response = caller.sign(
        params, unit=unit, maxPrice={"price": max_price, "currency": "wei", "unit": unit}
    )
    assert response.status_code == status, response.text
    assert len(control.events()) == (1 if status == 200 else 0)
    [record] = control.requests("/signer/generate-live-payment")
    assert record["maxPrice"] == {"price": max_price, "currency": "wei", "unit": unit}


def test_signer_uses_the_price_of_the_challenge_it_is_given(
    caller: Caller, control: SandboxControl
) -> None:
    """The signer reads the price from the challenge's payment params, not discovery."""
    params = caller.challenge()
    control.set_runner(SDXL_RUNNER, price=DEFAULT_PRICE * 2)  # after the challenge
    at_old_price = {"price": str(DEFAULT_PRICE), "currency": "wei", "unit": "fixed"}
    assert caller.sign(params, maxPrice=at_old_price).status_code == 200
    response = caller.sign(caller.challenge(), maxPrice=at_old_price)  # a fresh challenge
    assert_go_json(
        response,
        481,
        f"orchestrator price {DEFAULT_PRICE * 2}.000 exceeds request maxPrice ceiling"
        f" {DEFAULT_PRICE}.000",
    )
    assert len(control.events()) == 1


def test_signer_480_when_the_payment_params_expired(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    control.set_config(paymentParamsTtlSeconds=0)
    response = caller.sign(caller.challenge())
    assert_go_json(response, 480, "refresh session for remote signer")
    assert response.headers["livepeer-orchestrator-url"] == base
    assert control.events() == []


def test_signer_483_is_pymthouses_balance_refusal(caller: Caller, control: SandboxControl) -> None:
    control.set_balance(USER, 0)
    response = caller.sign(caller.challenge())
    assert_go_json(response, 483, "insufficient balance")
    assert control.events() == []


def test_signer_state_continues_the_nonce_sequence(caller: Caller, control: SandboxControl) -> None:
    """GL: a signed state restores balance and nonce; a tampered one is "invalid sig"."""
    params = caller.challenge()
    first = caller.sign(params).json()
    second = caller.sign(params, state=first["state"])
    assert second.status_code == 200, second.text
    tampered = dict(first["state"], Sig=base64.b64encode(b"x" * 32).decode())
    assert_go_json(caller.sign(params, state=tampered), 400, "invalid sig")
    assert len(control.events()) == 2
    # Both payments are distinct tickets: each buys one call.
    assert caller.call(paid_headers(first)).status_code == 200
    assert caller.call(paid_headers(second.json())).status_code == 200
