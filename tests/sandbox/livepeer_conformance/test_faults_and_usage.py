"""Injected faults after payment, extreme values, and usage by manifest.

GL = livepeer/go-livepeer@176aa415ccea4f9861e0dd44e981cda17fb36f52.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
import requests

from sandbox.png import png_size
from tests.sandbox.helpers import (
    APP_ID,
    BASIC,
    DEFAULT_PRICE,
    FLUX_RUNNER,
    SDXL,
    SDXL_RUNNER,
    bearer,
)
from tests.sandbox.livepeer_conformance.support import (
    USER,
    Caller,
    image_bytes,
)
from tests.sandbox_server import SandboxControl

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
    control.set_runner(long_id, manifestIdLength=20_000)
    listed = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    ).json()[0]["runners"]
    assert f"{base}/apps/{long_id}/app" in [runner["url"] for runner in listed]
    params, headers = caller.payment(runner=long_id)
    assert len(params["manifest_id"]) == 20_000  # headers far above h11's 16 KiB, as Go allows
    assert caller.call(headers, runner=long_id).status_code == 200


def test_price_above_2_64_is_exact_end_to_end(caller: Caller, control: SandboxControl) -> None:
    huge = 2**64 + 7
    control.set_runner(FLUX_RUNNER, price=huge)
    _, headers = caller.payment(runner=FLUX_RUNNER, price=huge)
    body = {"prompt": "p", "size": "64x64"}
    assert caller.call(headers, runner=FLUX_RUNNER, body=body).status_code == 200
    [event] = control.events()
    assert event["feeWei"] == str(huge)


# --- usage: groupBy=manifest (docs/upstream.md §P6) ---


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
            "networkFeeUsdExact": "14305.113",  # USD micros, not dollars
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
