"""Shared calls and assertions of the conformance suite."""

from __future__ import annotations

import base64
import json
from typing import Any

import requests

from tests.sandbox.helpers import (
    SDXL_RUNNER,
    challenge,
    paid_headers,
    sign_payment,
    signer_address,
    signer_session,
)

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
