"""Shared Livepeer pieces: sign:job bearer checks, error envelopes, payment challenges."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.keys import TokenError, token_scopes
from sandbox.livepeer.tickets import PAYMENT_PARAMS_TTL_SECONDS, seal
from sandbox.state import SandboxState
from sandbox.web import json_response, parse_authorization

logger = logging.getLogger(__name__)

MAX_PIXELS_PER_IMAGE = 2048 * 2048


def go_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Response:
    """go-livepeer's envelope ``{"error":{"message":…}}`` (Go's encoder adds a newline)."""
    return json_response(
        {"error": {"message": message}}, status, headers=headers, trailing_newline=True
    )


def runner_error(status: int, message: str) -> Response:
    """ai-runner's envelope ``{"detail":{"msg":…}}``."""
    return json_response({"detail": {"msg": message}}, status)


class SignJobAuthError(Exception):
    pass


def sign_job_caller(state: SandboxState, request: Request) -> dict[str, Any]:
    """Claims of a sandbox-minted Bearer JWT with ``sign:job`` for this app.

    Raises SignJobAuthError with a message for the 401 body; "expired" appears in it
    for expired tokens so clients know to re-mint.
    """
    credentials = parse_authorization(request)
    if credentials.scheme != "bearer" or not credentials.token:
        raise SignJobAuthError("missing bearer token")
    try:
        claims = state.keys.verify(credentials.token)
    except TokenError as exc:
        raise SignJobAuthError(f"invalid token: {exc}") from exc
    if claims.get("client_id") != state.settings.app_id:
        raise SignJobAuthError("token was not issued to this app")
    if "sign:job" not in token_scopes(claims):
        raise SignJobAuthError("token lacks the sign:job scope")
    external_user_id = claims.get("external_user_id")
    if not isinstance(external_user_id, str) or not external_user_id:
        raise SignJobAuthError("token has no external_user_id")
    return claims


def payment_challenge(
    state: SandboxState, runner: str, model_id: str, manifest_id: str | None = None
) -> dict[str, Any]:
    """The body of a runner's 402: fresh sealed payment params for (a new) manifest."""
    public = state.settings.public_url
    manifest = manifest_id or secrets.token_hex(8)
    params = seal(
        state.hmac_secret,
        "payment_params",
        {
            "runner": runner,
            "modelId": model_id,
            "manifestId": manifest,
            "pricePerUnit": str(state.config.price_per_pixel_wei),
            "pixelsPerUnit": 1,
            "unit": "pixel",
            "currency": "wei",
            "ticketParams": {
                "recipient": state.signer_address,
                "faceValue": str(10**15),
                "winProb": "1",
                "recipientRandHash": secrets.token_hex(32),
                "seed": secrets.token_hex(16),
            },
            "expiresAt": int(time.time()) + PAYMENT_PARAMS_TTL_SECONDS,
        },
    )
    return {
        "payment_params": params,
        "orchestrator": public,
        "manifest_id": manifest,
        "payment_url": f"{public}/runner/{runner}/payment",
    }
