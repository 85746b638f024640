"""The sandbox's Livepeer surface, pinned rule by rule to go-livepeer 176aa415.

Every test names the upstream code it mirrors (GL = livepeer/go-livepeer @
176aa415ccea4f9861e0dd44e981cda17fb36f52; docs/upstream.md). All calls are real HTTP
against a sandbox process; a test asserts the exact status and body, and what must NOT
have happened (no usage event, no app run), so the sandbox cannot drift back to being
more lenient than the real orchestrator and signer.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import struct
import time
from typing import Any

import pytest
import requests  # noqa: TID251 - tests drive the sandbox over real HTTP

from sandbox.png import png_size
from tests.sandbox.helpers import (
    APP_ID,
    BASIC,
    DEFAULT_PRICE,
    FLUX,
    FLUX_RUNNER,
    SDXL,
    SDXL_RUNNER,
    bearer,
    challenge,
    paid_headers,
    sign_payment,
    signer_address,
    signer_session,
)
from tests.sandbox_server import SandboxControl

JOB = {"prompt": "a red fox", "size": "64x64", "seed": 42}
GO_TEXT = "text/plain; charset=utf-8"
USER = "conf-user"


class Caller:
    """One end user calling runners the way a correct client does."""

    def __init__(self, http: requests.Session, base: str, user: str = USER) -> None:
        self.http, self.base = http, base
        self.token: str = signer_session(http, base, user)["access_token"]
        self.sender = signer_address(http, base, self.token)

    def app(self, runner: str = SDXL_RUNNER) -> str:
        return f"{self.base}/apps/{runner}/app/"

    def challenge(self, runner: str = SDXL_RUNNER, body: Any = None) -> dict[str, Any]:
        return challenge(self.http, self.base, runner, self.sender, JOB if body is None else body)

    def sign(self, params: dict[str, Any], **kwargs: Any) -> requests.Response:
        return sign_payment(self.http, self.base, self.token, params, **kwargs)

    def payment(self, runner: str = SDXL_RUNNER, **kwargs: Any) -> tuple[dict[str, Any], dict]:
        params = self.challenge(runner)
        signed = self.sign(params, **kwargs)
        assert signed.status_code == 200, signed.text
        return params, paid_headers(signed.json())

    def call(self, headers: dict[str, str], runner: str = SDXL_RUNNER, body: Any = None, **kw: Any):
        return self.http.post(
            self.app(runner), json=JOB if body is None else body, headers=headers, **kw
        )


@pytest.fixture
def caller(http: requests.Session, base: str) -> Caller:
    return Caller(http, base)


def assert_go_text(response: requests.Response, status: int, message: str) -> None:
    """GL server/handlers.go respondWithError = Go http.Error: text/plain, message + newline."""
    assert (response.status_code, response.text) == (status, message + "\n")
    assert response.headers["content-type"] == GO_TEXT


def assert_go_json(response: requests.Response, status: int, message: str) -> None:
    """GL server/handlers.go respondJsonError: {"error":{"message"}} + newline."""
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert (
        response.text == json.dumps({"error": {"message": message}}, separators=(",", ":")) + "\n"
    )


def image_bytes(response: requests.Response) -> tuple[str, bytes]:
    [image] = response.json()["images"]
    header, _, data = image["url"].partition(",")
    return header, base64.b64decode(data)


# --- discovery: GL server/remote_signer.go GetOrchestrators, server/remote_discovery.go ---


def test_discovery_publishes_fixed_runners_at_their_app_url(caller: Caller, base: str) -> None:
    """GL ai/runner/live_runner.go discoveryRunnerURL: {orch}/apps/{runner}/app; unit fixed."""
    response = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    )
    assert response.status_code == 200
    [orchestrator] = response.json()
    assert orchestrator["address"] == base
    assert orchestrator["score"] == 1
    assert orchestrator["capabilities"] == [f"image-generation/{SDXL}", f"image-generation/{FLUX}"]
    runners = orchestrator["runners"]
    assert [runner["url"] for runner in runners] == [
        f"{base}/apps/bytedance-sdxl-lightning-1/app",
        f"{base}/apps/bytedance-sdxl-lightning-2/app",
        f"{base}/apps/black-forest-labs-flux-1-schnell-1/app",
        f"{base}/apps/black-forest-labs-flux-1-schnell-2/app",
    ]
    assert runners[0] == {
        "url": f"{base}/apps/{SDXL_RUNNER}/app",
        "app": f"image-generation/{SDXL}",
        "mode": "single-shot",
        "capacity": 100,
        "capacity_used": 0,
        "capacity_available": 100,
        "price_info": {"price": DEFAULT_PRICE, "currency": "wei", "unit": "fixed"},
    }
    assert '"price":4768371000000,' in response.text  # json.Number: a bare integer


def test_discovery_units_and_exact_prices(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    """GL server/remote_discovery.go validateRunnerPrice: fixed/seconds/720p-pixel-seconds only."""
    huge = 2**64 + 12345
    control.set_runner(SDXL_RUNNER, unit="seconds", price=huge)
    control.set_runner("bytedance-sdxl-lightning-2", unit="pixel")
    control.set_runner(FLUX_RUNNER, unit="hour")
    control.set_runner("black-forest-labs-flux-1-schnell-2", unit="720p-pixel-seconds", price=7)
    response = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    )
    [orchestrator] = response.json()
    assert [(r["url"].rsplit("/", 2)[-2], r["price_info"]) for r in orchestrator["runners"]] == [
        (SDXL_RUNNER, {"price": huge, "currency": "wei", "unit": "seconds"}),
        (
            "black-forest-labs-flux-1-schnell-2",
            {"price": 7, "currency": "wei", "unit": "720p-pixel-seconds"},
        ),
    ]
    assert f'"price":{huge},' in response.text  # exact digits, never a float

    for runner in (SDXL_RUNNER, "black-forest-labs-flux-1-schnell-2"):
        control.set_runner(runner, unit="per-pixel")
    empty = caller.http.get(f"{base}/signer/discover-orchestrators", headers=bearer(caller.token))
    assert_go_json(empty, 503, "Service Unavailable Error")  # no runner left: cache empty


def test_discovery_503_while_the_cache_is_empty_and_caps_filter(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    """GL server/remote_signer.go GetOrchestrators: 503 "cache empty" (masked), caps = OR."""
    url = f"{base}/signer/discover-orchestrators"
    control.set_config(discoveryEmpty=True)
    assert_go_json(
        caller.http.get(url, headers=bearer(caller.token)), 503, "Service Unavailable Error"
    )
    control.set_config(discoveryEmpty=False)
    by_cap = caller.http.get(
        url, params={"caps": f"image-generation/{FLUX}"}, headers=bearer(caller.token)
    ).json()
    assert len(by_cap) == 1
    assert len(by_cap[0]["runners"]) == 4  # the orchestrator is selected, with all its runners
    none = caller.http.get(url, params={"caps": "text-to-image/x"}, headers=bearer(caller.token))
    assert (none.status_code, none.json()) == (200, [])


# --- routing: Go ServeMux in GL server/ai_http.go startAIServer ---


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_app_base_without_slash_is_a_301(caller: Caller, base: str, method: str) -> None:
    """GL server/ai_http.go L105 "/apps/{runner_id}/app/{app_path...}": ServeMux answers 301."""
    response = caller.http.request(
        method,
        f"{base}/apps/{SDXL_RUNNER}/app?x=1",
        json=JOB if method == "POST" else None,
        headers={"Livepeer-Payer-Address": caller.sender},
        allow_redirects=False,
    )
    assert response.status_code == 301
    assert response.headers["location"] == f"/apps/{SDXL_RUNNER}/app/?x=1"
    if method == "GET":
        assert response.text == f'<a href="/apps/{SDXL_RUNNER}/app/?x=1">Moved Permanently</a>.\n\n'
    else:
        assert (response.text, response.headers.get("content-type")) == ("", None)
    unknown = caller.http.post(f"{base}/apps/nope/app", allow_redirects=False)
    assert unknown.status_code == 301  # routing happens before the runner is looked up


def test_unknown_runner_and_unknown_paths(caller: Caller, base: str) -> None:
    """GL ai/runner/live_runner.go lockLiveRunner 404 "runner not found"; mux 404 otherwise."""
    assert_go_text(caller.http.post(f"{base}/apps/nope/app/", json=JOB), 404, "runner not found")
    params = caller.challenge()
    # {payment_url}/refresh-payment does not exist on go-livepeer.
    assert_go_text(
        caller.http.post(params["payment_url"] + "/refresh-payment", json={}),
        404,
        "404 page not found",
    )
    assert_go_text(
        caller.http.post(f"{base}/apps/{SDXL_RUNNER}/session"),
        400,
        "only persistent runners have sessions",
    )


# --- unpaid call: GL server/ai_http.go runnerChallenge / runnerSender ---


@pytest.mark.parametrize("sender", [None, "", "0x1234", "not-an-address"])
def test_unpaid_call_without_payer_address_is_402_error(
    caller: Caller, control: SandboxControl, sender: str | None
) -> None:
    headers = {} if sender is None else {"Livepeer-Payer-Address": sender}
    response = caller.http.post(caller.app(), json=JOB, headers=headers)
    assert_go_json(response, 402, "invalid live runner payment signer address")
    assert "payment_params" not in response.text
    assert control.events() == []


def test_unpaid_call_gets_the_real_challenge(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    response = caller.http.post(
        caller.app(), json=JOB, headers={"Livepeer-Payer-Address": caller.sender}
    )
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["payment_params", "orchestrator", "manifest_id", "payment_url"]
    assert body["orchestrator"] == base
    assert re.fullmatch(r"[0-9a-f]{8}", body["manifest_id"])  # core.RandomManifestID
    assert body["payment_url"] == (
        f"{base}/apps/{SDXL_RUNNER}/session/{body['manifest_id']}/payment"
    )
    base64.b64decode(body["payment_params"], validate=True)
    assert caller.challenge()["manifest_id"] != body["manifest_id"]  # a new session each time
    assert control.events() == []
    assert control.requests(path="/signer/generate-live-payment") == []


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


# --- injected faults (what the client must survive) ---


def test_drop_after_payment_leaves_the_payment_spent(
    caller: Caller, control: SandboxControl
) -> None:
    control.set_runner(SDXL_RUNNER, appFault={"kind": "drop", "times": 1})
    _, headers = caller.payment()
    with pytest.raises(requests.ConnectionError):
        caller.call(headers)
    assert caller.call(headers).status_code == 400  # nonce already seen
    assert len(control.events()) == 1


def test_oversized_wrong_size_jpeg_url_and_redirect_faults(
    caller: Caller, control: SandboxControl
) -> None:
    faults: list[dict[str, Any]] = [
        {"kind": "oversized", "bytes": 3_000_000},
        {"kind": "wrong-size"},
        {"kind": "jpeg"},
        {"kind": "image-url", "host": "169.254.169.254"},
        {"kind": "redirect", "status": 307, "location": "http://10.0.0.1/x"},
    ]
    responses = []
    for fault in faults:
        control.set_runner(SDXL_RUNNER, appFault={**fault, "times": 1})
        _, headers = caller.payment()
        responses.append(caller.call(headers, allow_redirects=False))
    oversized, wrong, jpeg, url, redirect = responses
    assert (oversized.status_code, len(oversized.content)) == (200, 3_000_000)
    assert png_size(image_bytes(wrong)[1]) == (72, 72)
    header, data = image_bytes(jpeg)
    assert header == "data:image/jpeg;base64"
    assert data[:2] == b"\xff\xd8"
    assert data[-2:] == b"\xff\xd9"
    sof = data.index(b"\xff\xc0")
    assert struct.unpack(">HH", data[sof + 5 : sof + 9]) == (64, 64)
    assert url.json()["images"][0]["url"].startswith("http://169.254.169.254/images/")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "http://10.0.0.1/x")
    assert len(control.events()) == 5
    assert control.runners()[0]["appFault"] is None  # times consumed


def test_over_long_manifest_ids_and_runner_urls(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    long_id = "runner-" + "x" * 3000
    control.add_runner(long_id, model=SDXL)
    control.set_runner(long_id, manifestIdLength=4096)
    listed = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    ).json()[0]["runners"]
    assert f"{base}/apps/{long_id}/app" in [runner["url"] for runner in listed]
    params, headers = caller.payment(runner=long_id)
    assert len(params["manifest_id"]) == 4096
    assert caller.call(headers, runner=long_id).status_code == 200


def test_price_above_2_64_is_exact_end_to_end(caller: Caller, control: SandboxControl) -> None:
    huge = 2**64 + 7
    control.set_runner(FLUX_RUNNER, price=huge)
    _, headers = caller.payment(runner=FLUX_RUNNER, price=huge)
    body = {"prompt": "p", "size": "64x64"}
    assert caller.call(headers, runner=FLUX_RUNNER, body=body).status_code == 200
    [event] = control.events()
    assert event["feeWei"] == str(huge)


# --- usage: pymthouse-api.md §7.1 groupBy=manifest ---


def test_usage_by_manifest_joins_on_the_challenge_session(
    caller: Caller, http: requests.Session, base: str, control: SandboxControl
) -> None:
    first, headers = caller.payment()
    assert caller.call(headers).status_code == 200
    second, headers = caller.payment()
    assert caller.call(headers).status_code == 200
    Caller(http, base, "someone-else").payment()
    response = http.get(
        f"{base}/api/v1/builder/apps/{APP_ID}/usage",
        auth=BASIC,
        params={"groupBy": "manifest", "userId": USER},
    )
    body = response.json()
    assert list(body) == ["clientId", "source", "period", "totals", "byManifest"]
    assert body["totals"] == {
        "requestCount": 2,
        "currency": "USD",
        "networkFeeUsdMicros": "28612",
        "ownerChargeUsdMicros": "28612",
        "platformFeeUsdMicros": "0",
    }
    assert body["byManifest"] == [
        {
            "manifestId": params["manifest_id"],
            "currency": "USD",
            "networkFeeUsdMicros": "14306",
            "networkFeeUsdExact": "0.014305113",
            "ownerChargeUsdMicros": "14306",
            "feeWei": str(DEFAULT_PRICE),
            "billableSecs": "0",
            "pipeline": "fixed",
            "modelId": "unknown",
        }
        for params in (first, second)
    ]
    by_user = http.get(
        f"{base}/api/v1/builder/apps/{APP_ID}/usage", auth=BASIC, params={"groupBy": "user"}
    )
    assert "feeWei" not in by_user.text  # wei only in manifest rows
