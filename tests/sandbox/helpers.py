"""Shared constants and calls for the sandbox tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import requests

APP_ID = "app_b50c8e3d43c6d3641cae2e66"
M2M_ID = "m2m_b50c8e3d43c6d3641cae2e66"
M2M_SECRET = "pmth_cs_d219242171aaac09ef84f4b5af2f26e2abf754b68d78b9462ca567a2e8a0cbfe"
BASIC = (M2M_ID, M2M_SECRET)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def jose_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return header


def claims(token: str) -> dict[str, Any]:
    result: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return result


def signer_session(http: requests.Session, base: str, external_user_id: str) -> dict[str, Any]:
    response = http.post(
        f"{base}/api/v1/oidc/token",
        auth=BASIC,
        data={
            "grant_type": "client_credentials",
            "scope": "sign:mint_user_token",
            "external_user_id": external_user_id,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def provision(
    http: requests.Session, base: str, external_user_id: str, **fields: Any
) -> dict[str, Any]:
    response = http.post(
        f"{base}/api/v1/apps/{APP_ID}/users",
        auth=BASIC,
        json={"externalUserId": external_user_id, **fields},
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def user_token(http: requests.Session, base: str, external_user_id: str) -> str:
    response = http.post(f"{base}/api/v1/apps/{APP_ID}/users/{external_user_id}/token", auth=BASIC)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


SDXL = "ByteDance/SDXL-Lightning"
FLUX = "black-forest-labs/FLUX.1-schnell"
SDXL_RUNNER = "bytedance-sdxl-lightning-1"
FLUX_RUNNER = "black-forest-labs-flux-1-schnell-1"
DEFAULT_PRICE = 4_768_371_000_000  # the sandbox runners' start-up fixed price (wei)
PAYMENT_TYPES = {"fixed": "fixed", "seconds": "live", "720p-pixel-seconds": "lv2v"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signer_address(http: requests.Session, base: str, token: str) -> str:
    response = http.post(f"{base}/signer/sign-orchestrator-info", headers=bearer(token), json={})
    assert response.status_code == 200, response.text
    address: str = response.json()["address"]
    return address


def challenge(
    http: requests.Session, base: str, runner: str, sender: str, body: Any = None
) -> dict[str, Any]:
    """The 402 challenge of an unpaid call to ``{base}/apps/{runner}/app/``."""
    response = http.post(
        f"{base}/apps/{runner}/app/",
        json={"prompt": "p"} if body is None else body,
        headers={"Livepeer-Payer-Address": sender},
    )
    assert response.status_code == 402, response.text
    result: dict[str, Any] = response.json()
    return result


def sign_payment(
    http: requests.Session,
    base: str,
    token: str,
    params: dict[str, Any],
    *,
    unit: str = "fixed",
    price: int = DEFAULT_PRICE,
    **extra: Any,
) -> requests.Response:
    """``POST /signer/generate-live-payment`` for a challenge, the way a client should."""
    body = {
        "orchestrator": params["payment_params"],
        "type": PAYMENT_TYPES[unit],
        "ManifestID": params["manifest_id"],
        "maxPrice": {"price": str(price), "currency": "wei", "unit": unit},
        **extra,
    }
    return http.post(f"{base}/signer/generate-live-payment", headers=bearer(token), json=body)


def paid_headers(payment: dict[str, Any]) -> dict[str, str]:
    return {"Livepeer-Payment": payment["payment"], "Livepeer-Segment": payment["segCreds"]}


def paid_call(
    http: requests.Session,
    base: str,
    user: str,
    *,
    runner: str = SDXL_RUNNER,
    body: Any = None,
    unit: str = "fixed",
    price: int = DEFAULT_PRICE,
) -> tuple[dict[str, Any], requests.Response]:
    """Challenge, signer payment, paid call: (the challenge, the paid response)."""
    token = signer_session(http, base, user)["access_token"]
    sender = signer_address(http, base, token)
    job = {"prompt": "p", "size": "64x64"} if body is None else body
    params = challenge(http, base, runner, sender, job)
    signed = sign_payment(http, base, token, params, unit=unit, price=price)
    assert signed.status_code == 200, signed.text
    response = http.post(
        f"{base}/apps/{runner}/app/", json=job, headers=paid_headers(signed.json())
    )
    return params, response
