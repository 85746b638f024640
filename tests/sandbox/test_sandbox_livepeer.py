"""AI gateway stand-in, queue mode, runner latency and concurrency.

The live-runner payment path (challenge, signer, paid call) is pinned rule by rule
against go-livepeer in ``tests/sandbox/livepeer_conformance/``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import re
import time
from typing import Any

import pytest
import requests

from sandbox.png import default_seed, png_size, png_text
from tests.sandbox.helpers import (
    FLUX_RUNNER,
    SDXL,
    bearer,
    challenge,
    paid_headers,
    sign_payment,
    signer_address,
    signer_session,
)
from tests.sandbox_server import SandboxControl


def signer_token(http: requests.Session, base: str, user: str = "lp-user") -> str:
    token: str = signer_session(http, base, user)["access_token"]
    return token


def test_runner_latency_and_queue_mode(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    sender = signer_address(http, base, token)
    app = f"{base}/apps/{FLUX_RUNNER}/app/"
    job = {"prompt": "queued", "size": "64x32"}

    control.set_config(runnerLatencySeconds=0.4)
    signed = sign_payment(http, base, token, challenge(http, base, FLUX_RUNNER, sender, job))
    started = time.monotonic()
    assert http.post(app, json=job, headers=paid_headers(signed.json())).status_code == 200
    assert time.monotonic() - started >= 0.4

    control.set_config(runnerMode="queue", runnerLatencySeconds=0.6)
    signed = sign_payment(http, base, token, challenge(http, base, FLUX_RUNNER, sender, job))
    receipt = http.post(app, json=job, headers=paid_headers(signed.json())).json()
    assert list(receipt) == ["status", "request_id", "status_url", "response_url"]
    assert receipt["status"] == "IN_QUEUE"
    assert receipt["status_url"].startswith(f"{base}/runner/{FLUX_RUNNER}/requests/")
    assert http.get(receipt["status_url"]).json() == {"status": "IN_PROGRESS"}
    assert http.get(receipt["response_url"]).status_code == 400
    time.sleep(0.7)
    assert http.get(receipt["status_url"]).json() == {"status": "COMPLETED"}
    [image] = http.get(receipt["response_url"]).json()["images"]
    assert image["seed"] == default_seed("queued")
    assert png_size(base64.b64decode(image["url"].split(",", 1)[1])) == (64, 32)
    assert len(control.events()) == 2


def generate(
    http: requests.Session, base: str, token: str | None, body: Any, **headers: str
) -> requests.Response:
    all_headers = dict(headers)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return http.post(f"{base}/text-to-image", json=body, headers=all_headers)


def test_gateway_happy_path(http: requests.Session, base: str, control: SandboxControl) -> None:
    token = signer_token(http, base, "gw-user")
    body = {"model_id": SDXL, "prompt": "a lighthouse", "width": 1024, "height": 576, "seed": 7,
            "num_images_per_prompt": 2}  # fmt: skip
    response = generate(http, base, token, body, **{"X-Request-Id": "job-77"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text.endswith("\n")
    images = response.json()["images"]
    assert [list(image) for image in images] == [["nsfw", "seed", "url"]] * 2
    assert [image["seed"] for image in images] == [7, 8]
    for image in images:
        assert re.fullmatch(r"/stream/[0-9a-f]{8}/[0-9a-f]{8}\.png", image["url"])
        served = http.get(base + image["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert served.headers["cache-control"] == "max-age=5"
        assert served.headers["content-length"] == str(len(served.content))
        assert png_size(served.content) == (1024, 576)
        assert png_text(served.content) == {
            "model_id": SDXL, "prompt": "a lighthouse", "seed": image["seed"]
        }  # fmt: skip

    # go-livepeer's gateway pays with its own key: nobody is billed through pymthouse.
    assert control.events() == []
    assert [u["balanceUsdMicros"] for u in control.users()] == ["5000000"]
    assert http.get(f"{base}/stream/00000000/00000000.png").status_code == 404


def test_gateway_defaults_and_go_decoding(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    response = generate(http, base, token, {"MODEL_ID": SDXL, "Prompt": "p", "width": None})
    assert response.status_code == 200
    [image] = response.json()["images"]
    assert image["seed"] == default_seed("p")
    assert png_size(http.get(base + image["url"]).content) == (512, 512)

    bad = generate(http, base, token, {"model_id": SDXL, "prompt": "p", "width": "512"})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": {
            "message": "json: cannot unmarshal string into Go struct field "
            "TextToImageParams.width of type int"
        }
    }
    empty = http.post(f"{base}/text-to-image", data=b"", headers=bearer(token))
    assert (empty.status_code, empty.json()) == (400, {"error": {"message": "EOF"}})
    no_prompt = generate(http, base, token, {"model_id": SDXL})
    assert no_prompt.json() == {"error": {"message": ": Prompt must be provided."}}
    odd = generate(http, base, token, {"model_id": SDXL, "prompt": "p", "width": 100})
    assert odd.status_code == 400
    unknown = generate(http, base, token, {"model_id": "some/other", "prompt": "p"})
    assert unknown.status_code == 503
    assert unknown.json() == {"error": {"message": "Service Unavailable Error"}}
    assert control.events() == []


def test_gateway_ignores_authorization_and_never_refuses_a_user(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    """go-livepeer server/ai_mediaserver.go: no auth on AI routes, no 402/483 (livepeer-api §00)."""
    body = {"model_id": SDXL, "prompt": "p", "width": 64, "height": 64}
    assert generate(http, base, None, body).status_code == 200
    assert generate(http, base, "not-a-jwt", body).status_code == 200

    token = signer_token(http, base)
    control.set_balance("lp-user", 0)
    response = generate(http, base, token, body, **{"X-Request-Id": "job-1"})
    assert response.status_code == 200
    assert [u["balanceUsdMicros"] for u in control.users()] == ["0"]

    with pytest.raises(requests.ConnectionError):
        generate(http, base, token, {"prompt": "p"})
    [record] = control.requests(path="/text-to-image")[-1:]
    assert (record["status"], record["dropped"]) == (None, True)
    assert control.events() == []


def test_hundreds_of_slow_requests_in_flight(base: str, control: SandboxControl) -> None:
    control.set_config(runnerLatencySeconds=1.0)
    body = {"model_id": SDXL, "prompt": "p", "width": 8, "height": 8}

    def one(_: int) -> int:
        with requests.Session() as session:
            session.trust_env = False
            response = session.post(f"{base}/text-to-image", json=body, timeout=30)
            return response.status_code

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 200
    assert elapsed < 10, elapsed  # serially this would take 200 s
