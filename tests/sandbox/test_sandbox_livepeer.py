"""Remote signer, live-runner apps (402 challenge + payment) and the AI gateway."""

from __future__ import annotations

import base64
import concurrent.futures
import re
import time
from typing import Any

import pytest
import requests  # noqa: TID251 - tests drive the sandbox over real HTTP

from sandbox.png import default_seed, png_size, png_text, render_png
from tests.sandbox.helpers import provision, signer_session, user_token
from tests.sandbox_server import SandboxControl

SDXL = "ByteDance/SDXL-Lightning"
FLUX = "black-forest-labs/FLUX.1-schnell"
PRICE = 4768371
FEE_1024 = 1024 * 1024 * PRICE  # 4_999_999_389_696 wei
USD_1024 = 15000  # ceil(4_999_999_389_696 * 3000 / 10**12) = ceil(14999.998169088)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signer_token(http: requests.Session, base: str, user: str = "lp-user") -> str:
    token: str = signer_session(http, base, user)["access_token"]
    return token


def pay(
    http: requests.Session,
    base: str,
    token: str,
    challenge: dict[str, Any],
    pixels: int,
    **extra: Any,
) -> requests.Response:
    body = {
        "orchestrator": challenge["payment_params"],
        "type": "",
        "inPixels": pixels,
        "ManifestID": challenge["manifest_id"],
        "app": f"image-generation/{SDXL}",
        "maxPrice": {"price": str(PRICE), "currency": "wei", "unit": "pixel"},
        "gatewayRequestId": "job-1",
        "pipeline": "text-to-image",
        "modelId": SDXL,
        "attributionSource": "direct_api",
        **extra,
    }
    return http.post(f"{base}/signer/generate-live-payment", headers=bearer(token), json=body)


def test_discovery_lists_two_runners_per_model(http: requests.Session, base: str) -> None:
    assert http.get(f"{base}/signer/discover-orchestrators").status_code == 401
    response = http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(signer_token(http, base))
    )
    assert response.status_code == 200
    orchestrators = response.json()
    assert len(orchestrators) == 1
    orchestrator = orchestrators[0]
    assert orchestrator["address"] == base
    assert orchestrator["capabilities"] == [f"text-to-image/{SDXL}", f"text-to-image/{FLUX}"]
    assert [(r["url"], r["app"]) for r in orchestrator["runners"]] == [
        (f"{base}/runner/bytedance-sdxl-lightning-1/image", f"image-generation/{SDXL}"),
        (f"{base}/runner/bytedance-sdxl-lightning-2/image", f"image-generation/{SDXL}"),
        (f"{base}/runner/black-forest-labs-flux-1-schnell-1/image", f"image-generation/{FLUX}"),
        (f"{base}/runner/black-forest-labs-flux-1-schnell-2/image", f"image-generation/{FLUX}"),
    ]
    for runner in orchestrator["runners"]:
        assert runner["mode"] == "single-shot"
        assert runner["price_info"] == {"price": PRICE, "currency": "wei", "unit": "pixel"}
        assert runner["capacity_available"] == runner["capacity"] - runner["capacity_used"]

    filtered = http.get(
        f"{base}/signer/discover-orchestrators",
        params={"caps": f"text-to-image/{FLUX}"},
        headers=bearer(signer_token(http, base)),
    ).json()
    assert [r["app"] for r in filtered[0]["runners"]] == [f"image-generation/{FLUX}"] * 2


def test_sign_orchestrator_info(http: requests.Session, base: str) -> None:
    response = http.post(
        f"{base}/signer/sign-orchestrator-info", headers=bearer(signer_token(http, base)), json={}
    )
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"0x[0-9a-f]{40}", body["address"])
    assert re.fullmatch(r"0x[0-9a-f]{130}", body["signature"])
    assert body["address"] == http.get(f"{base}/api/v1/health").json()["signer"]["ethAddress"]
    unauthorized = http.post(f"{base}/signer/sign-orchestrator-info", json={})
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {"error": {"message": "missing bearer token"}}


def test_runner_payment_flow_bills_one_ticket(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    runner = f"{base}/runner/bytedance-sdxl-lightning-1/image"
    job = {"prompt": "a red fox", "size": "1024x1024", "model_id": SDXL, "seed": 42}

    challenge_response = http.post(runner, json=job)
    assert challenge_response.status_code == 402
    challenge = challenge_response.json()
    assert list(challenge) == ["payment_params", "orchestrator", "manifest_id", "payment_url"]
    assert challenge["payment_url"] == f"{base}/runner/bytedance-sdxl-lightning-1/payment"
    base64.b64decode(challenge["payment_params"], validate=True)
    assert control.events() == []

    paid = pay(http, base, token, challenge, 1024 * 1024)
    assert paid.status_code == 200
    payment = paid.json()
    assert list(payment) == ["payment", "segCreds", "state"]
    assert list(payment["state"]) == ["State", "Sig"]

    [event] = control.events()
    assert event["externalUserId"] == "lp-user"
    assert event["gatewayRequestId"] == "job-1"
    assert event["pipeline"] == "text-to-image"
    assert event["modelId"] == SDXL
    assert event["manifestId"] == challenge["manifest_id"]
    assert event["feeWei"] == str(FEE_1024) == "4999999389696"
    assert event["usdMicros"] == str(USD_1024)
    assert event["pixels"] == 1024 * 1024
    [user] = control.users()
    assert user["balanceUsdMicros"] == str(5_000_000 - USD_1024)

    headers = {"Livepeer-Payment": payment["payment"], "Livepeer-Segment": payment["segCreds"]}
    result = http.post(runner, json=job, headers=headers)
    assert result.status_code == 200
    [image] = result.json()["images"]
    assert list(image) == ["url", "seed", "nsfw"]
    assert (image["seed"], image["nsfw"]) == (42, False)
    assert image["url"].startswith("data:image/png;base64,")
    png = base64.b64decode(image["url"].split(",", 1)[1])
    assert png == render_png(width=1024, height=1024, model_id=SDXL, seed=42, prompt="a red fox")

    # A payment is single-use, and only good at the runner it was issued for.
    assert http.post(runner, json=job, headers=headers).status_code == 402
    other = http.post(f"{base}/runner/bytedance-sdxl-lightning-2/image", json=job, headers=headers)
    assert other.status_code == 402
    assert len(control.events()) == 1


def test_payment_must_cover_the_requested_pixels(http: requests.Session, base: str) -> None:
    token = signer_token(http, base)
    runner = f"{base}/runner/bytedance-sdxl-lightning-1/image"
    job = {"prompt": "p", "size": "1024x1024"}
    challenge = http.post(runner, json=job).json()
    small = pay(http, base, token, challenge, 512 * 512).json()
    assert (
        http.post(runner, json=job, headers={"Livepeer-Payment": small["payment"]}).status_code
        == 402
    )


def test_user_token_is_accepted_by_the_signer(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    provision(http, base, "app-user")
    token = user_token(http, base, "app-user")
    challenge = http.post(
        f"{base}/runner/bytedance-sdxl-lightning-1/image", json={"prompt": "p"}
    ).json()
    assert pay(http, base, token, challenge, 64).status_code == 200
    assert [e["externalUserId"] for e in control.events()] == ["app-user"]


def test_signer_483_when_out_of_credit(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    control.set_balance("lp-user", 0)
    challenge = http.post(
        f"{base}/runner/bytedance-sdxl-lightning-1/image", json={"prompt": "p"}
    ).json()
    response = pay(http, base, token, challenge, 1024)
    assert response.status_code == 483
    assert response.json() == {"error": {"message": "insufficient balance"}}
    assert control.events() == []
    assert control.users()[0]["balanceUsdMicros"] == "0"


def test_signer_rejects_bad_tokens_and_params(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    challenge = http.post(
        f"{base}/runner/bytedance-sdxl-lightning-1/image", json={"prompt": "p"}
    ).json()
    forged = pay(http, base, token[:-6] + "AAAAAA", challenge, 64)
    assert forged.status_code == 401
    assert forged.json()["error"]["message"].startswith("invalid token")
    tampered = dict(
        challenge, payment_params=base64.b64encode(b'{"kind":"payment_params"}').decode()
    )
    assert pay(http, base, token, tampered, 64).status_code == 400
    assert pay(http, base, token, challenge, 64, maxPrice={"price": "1"}).status_code == 481
    assert pay(http, base, token, challenge, 64, type="fixed").status_code == 400
    assert pay(http, base, token, challenge, 0).status_code == 400
    assert control.events() == []


def test_runner_validation_and_refresh(http: requests.Session, base: str) -> None:
    runner = f"{base}/runner/bytedance-sdxl-lightning-1"
    unknown = http.post(f"{runner}/image", json={"prompt": "p", "model_id": "nope/model"})
    assert unknown.status_code == 400
    assert list(unknown.json()) == ["detail"]
    wrong = http.post(f"{runner}/image", json={"prompt": "p", "model_id": FLUX})
    assert wrong.json() == {
        "detail": {"msg": f"pipeline configured with {SDXL} but called with {FLUX}."}
    }
    odd = http.post(f"{runner}/image", json={"prompt": "p", "size": "1023x1024"})
    assert odd.status_code == 400
    assert odd.json() == {
        "detail": {
            "msg": "Error during model execution: `height` and `width` have to be divisible "
            "by 8 but are 1024 and 1023."
        }
    }
    assert http.post(f"{runner}/image", json={"size": "8x8"}).status_code == 400
    assert http.post(f"{base}/runner/nope/image", json={"prompt": "p"}).status_code == 404

    for path in ("refresh-payment", "payment/refresh-payment"):
        refreshed = http.post(f"{runner}/{path}", json={"manifest_id": "abc123"})
        assert refreshed.status_code == 200
        assert refreshed.json()["manifest_id"] == "abc123"


def test_runner_latency_and_queue_mode(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token = signer_token(http, base)
    runner = f"{base}/runner/black-forest-labs-flux-1-schnell-2/image"
    job = {"prompt": "queued", "size": "64x32"}

    control.set_config(runnerLatencySeconds=0.4)
    challenge = http.post(runner, json=job).json()
    payment = pay(http, base, token, challenge, 64 * 32).json()["payment"]
    started = time.monotonic()
    assert http.post(runner, json=job, headers={"Livepeer-Payment": payment}).status_code == 200
    assert time.monotonic() - started >= 0.4

    control.set_config(runnerMode="queue", runnerLatencySeconds=0.6)
    challenge = http.post(runner, json=job).json()
    payment = pay(http, base, token, challenge, 64 * 32).json()["payment"]
    receipt = http.post(runner, json=job, headers={"Livepeer-Payment": payment}).json()
    assert list(receipt) == ["status", "request_id", "status_url", "response_url"]
    assert receipt["status"] == "IN_QUEUE"
    assert http.get(receipt["status_url"]).json() == {"status": "IN_PROGRESS"}
    assert http.get(receipt["response_url"]).status_code == 400
    time.sleep(0.7)
    assert http.get(receipt["status_url"]).json() == {"status": "COMPLETED"}
    [image] = http.get(receipt["response_url"]).json()["images"]
    assert image["seed"] == default_seed("queued")
    assert png_size(base64.b64decode(image["url"].split(",", 1)[1])) == (64, 32)


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

    [event] = control.events()
    pixels = 1024 * 576 * 2
    assert event["gatewayRequestId"] == "job-77"
    assert event["externalUserId"] == "gw-user"
    assert event["manifestId"] == images[0]["url"].split("/")[2]
    assert (event["pixels"], event["feeWei"]) == (pixels, str(pixels * PRICE))
    assert (
        event["usdMicros"] == "16875"
    )  # ceil(5_624_999_313_408 * 3000 / 10**12) = ceil(16874.99...)
    assert control.users()[0]["balanceUsdMicros"] == str(5_000_000 - 16875)
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
    assert control.events()[0]["gatewayRequestId"] is None

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
    assert len(control.events()) == 1


def test_gateway_auth_balance_and_missing_model(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    body = {"model_id": SDXL, "prompt": "p", "width": 64, "height": 64}
    assert generate(http, base, None, body).status_code == 401
    assert generate(http, base, "not-a-jwt", body).status_code == 401

    token = signer_token(http, base)
    control.set_balance("lp-user", 0)
    response = generate(http, base, token, body)
    assert response.status_code == 483
    assert response.json() == {"error": {"message": "insufficient balance"}}

    with pytest.raises(requests.ConnectionError):
        generate(http, base, token, {"prompt": "p"})
    [record] = control.requests(path="/text-to-image")[-1:]
    assert (record["status"], record["dropped"]) == (None, True)
    assert control.events() == []


def test_hundreds_of_slow_requests_in_flight(base: str, control: SandboxControl) -> None:
    with requests.Session() as http:
        http.trust_env = False
        token = signer_token(http, base)
    control.set_config(runnerLatencySeconds=1.0)
    body = {"model_id": SDXL, "prompt": "p", "width": 8, "height": 8}

    def one(_: int) -> int:
        with requests.Session() as session:
            session.trust_env = False
            response = session.post(
                f"{base}/text-to-image", json=body, headers=bearer(token), timeout=30
            )
            return response.status_code

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 200
    assert elapsed < 10, elapsed  # serially this would take 200 s
    assert len(control.events()) == 200
