"""Shared constants and calls for the sandbox tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import requests  # noqa: TID251 - tests drive the sandbox over real HTTP

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
