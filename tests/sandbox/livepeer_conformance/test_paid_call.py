"""The paid call: GL server/ai_http.go reservePaidLiveRunnerSession, server/segment_rpc.go,
core/orchestrator.go ProcessPayment, pm/recipient.go, server/rpc.go RefreshPayment.

GL = livepeer/go-livepeer@176aa415ccea4f9861e0dd44e981cda17fb36f52.
"""

from __future__ import annotations

import concurrent.futures
import re
import time

import requests

from sandbox.png import png_size
from tests.sandbox.helpers import (
    DEFAULT_PRICE,
    SDXL_RUNNER,
    challenge,
    paid_headers,
)
from tests.sandbox.livepeer_conformance.support import (
    GO_TEXT,
    JOB,
    Caller,
    assert_go_json,
    assert_go_text,
    image_bytes,
)
from tests.sandbox_server import SandboxControl

# --- paid call: GL server/ai_http.go reservePaidLiveRunnerSession, server/segment_rpc.go ---


def test_paid_call_success(caller: Caller, control: SandboxControl) -> None:
    params, headers = caller.payment()
    response = caller.call(headers)
    assert response.status_code == 200, response.text
    header, png = image_bytes(response)
    assert header == "data:image/png;base64"
    assert png_size(png) == (64, 64)
    [event] = control.events()
    assert event["manifestId"] == params["manifest_id"]


def test_payment_without_segment_is_403_and_not_consumed(
    caller: Caller, control: SandboxControl
) -> None:
    _, headers = caller.payment()
    only_payment = {"Livepeer-Payment": headers["Livepeer-Payment"]}
    assert_go_text(caller.call(only_payment), 403, "ErrSegSig")
    only_segment = {"Livepeer-Segment": headers["Livepeer-Segment"]}
    assert_go_text(caller.call(only_segment), 403, "ErrSegSig")  # empty payment: sender 0x0
    assert caller.call(headers).status_code == 200  # checks ran before ProcessPayment
    assert len(control.events()) == 1


def test_segment_manifest_must_be_the_challenge_session(caller: Caller) -> None:
    params = caller.challenge()
    signed = caller.sign({**params, "manifest_id": "deadbeef"})
    assert signed.status_code == 200  # the signer does not know the session
    assert_go_text(
        caller.call(paid_headers(signed.json())), 403, "mismatched manifest and auth token"
    )


def test_challenge_for_another_payer_is_refused(caller: Caller, http: requests.Session) -> None:
    """GL pm/recipient.go: ticket params are bound to the sender named in the challenge."""
    params = challenge(http, caller.base, SDXL_RUNNER, "0x" + "ab" * 20, JOB)
    signed = caller.sign(params)
    assert signed.status_code == 200
    assert_go_text(
        caller.call(paid_headers(signed.json())),
        400,
        "invalid recipientRand for recipientRandHash",
    )


def test_fixed_price_must_match_the_runner_price(caller: Caller, control: SandboxControl) -> None:
    _, headers = caller.payment()
    control.set_runner(SDXL_RUNNER, price=DEFAULT_PRICE + 1)
    assert_go_text(caller.call(headers), 400, "payment price does not match live runner price")
    control.set_runner(SDXL_RUNNER, price=DEFAULT_PRICE)
    assert caller.call(headers).status_code == 200  # refused before payment processing


def test_a_payment_is_consumed_before_the_app_runs(caller: Caller, control: SandboxControl) -> None:
    """GL core/orchestrator.go ProcessPayment + pm/recipient.go updateSenderNonce."""
    _, headers = caller.payment()
    bad_body = {"prompt": "p", "size": "1023x1024"}
    refused = caller.call(headers, body=bad_body)  # the app validates after payment
    assert refused.status_code == 400
    assert refused.json()["detail"]["msg"].startswith("Error during model execution")
    again = caller.call(headers)
    assert again.status_code == 400
    assert again.headers["content-type"] == GO_TEXT
    assert re.fullmatch(
        r"invalid ticket senderNonce: already seen sender=0x[0-9a-f]{40} nonce=\d+\n", again.text
    )
    assert len(control.events()) == 1


def test_same_payment_twice_after_success_is_400(caller: Caller, control: SandboxControl) -> None:
    _, headers = caller.payment()
    assert caller.call(headers).status_code == 200
    assert caller.call(headers).status_code == 400
    other_runner = caller.call(headers, runner="bytedance-sdxl-lightning-2")
    assert other_runner.status_code == 400  # the ticket was spent at this orchestrator
    assert len(control.events()) == 1


def test_capacity_503_happens_before_payment(caller: Caller, control: SandboxControl) -> None:
    """GL ai/runner/live_runner.go ReserveSession runs before ProcessPayment."""
    _, headers = caller.payment()
    control.set_runner(SDXL_RUNNER, capacity=0)
    assert_go_text(caller.call(headers), 503, "no capacity available for runner")
    control.set_runner(SDXL_RUNNER, capacity=1)
    assert caller.call(headers).status_code == 200  # the same payment is still good


def test_same_session_in_flight_is_409_before_payment(
    caller: Caller, control: SandboxControl
) -> None:
    """GL ai/runner/live_runner.go ReserveSession(runner, manifest): "session already exists"."""
    params = caller.challenge()
    first = caller.sign(params).json()
    second = caller.sign(params, state=first["state"]).json()  # same session, next tickets
    control.set_config(runnerLatencySeconds=0.8)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(caller.call, paid_headers(first))
        deadline = time.monotonic() + 5
        while not any(r["capacityUsed"] for r in control.runners()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert_go_text(caller.call(paid_headers(second)), 409, "session already exists")
        assert slow.result().status_code == 200
    control.set_config(runnerLatencySeconds=0)
    assert caller.call(paid_headers(second)).status_code == 200  # it was never processed


def test_refresh_payment_at_the_orchestrator_root(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    """GL server/rpc.go RefreshPayment: {sender, manifest_id}; 409 before a fixed price."""
    url = f"{base}/refresh-payment"
    params = caller.challenge()
    body = {"sender": caller.sender, "manifest_id": params["manifest_id"]}
    assert_go_json(caller.http.post(url, json=body), 409, "fixed price not found for session")
    assert_go_json(caller.http.post(url, json={**body, "sender": "x"}), 400, "invalid sender")
    assert_go_json(
        caller.http.post(url, json={**body, "manifest_id": " "}), 400, "missing manifest_id"
    )
    signed = caller.sign(params)
    assert caller.call(paid_headers(signed.json())).status_code == 200
    refreshed = caller.http.post(url, json=body)
    assert refreshed.status_code == 200
    fresh = refreshed.json()
    assert list(fresh) == ["payment_params", "orchestrator", "manifest_id", "payment_url"]
    assert (fresh["manifest_id"], fresh["payment_url"]) == (
        params["manifest_id"],
        f"{base}/payment",
    )
    again = caller.sign(fresh)
    assert again.status_code == 200
    assert caller.call(paid_headers(again.json())).status_code == 200
    assert [e["manifestId"] for e in control.events()] == [params["manifest_id"]] * 2


def test_fixed_session_takes_no_follow_up_payment(caller: Caller) -> None:
    params, headers = caller.payment()
    assert caller.call(headers).status_code == 200
    assert_go_text(
        caller.http.post(params["payment_url"], headers=headers), 404, "session not found"
    )
