"""Shared Livepeer pieces: error envelopes, sign:job bearer checks, payment challenges."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.keys import TokenError, token_scopes
from sandbox.livepeer.tickets import seal
from sandbox.runners import RunnerConfig
from sandbox.state import SandboxState
from sandbox.web import json_response, parse_authorization

logger = logging.getLogger(__name__)

MAX_PIXELS_PER_IMAGE = 2048 * 2048
# The orchestrator's expected value per ticket (go-livepeer -ticketEV default 1e12 wei).
# The sandbox raises it for very large prices so that one call never needs more than
# 50 tickets (the signer refuses more than 100, server/remote_signer.go).
TICKET_EV_WEI = 10**12
HEX_ADDRESS = re.compile(r"^(0[xX])?[0-9a-fA-F]{40}$")  # go-ethereum common.IsHexAddress


def go_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Response:
    """go-livepeer's ``respondJsonError``: ``{"error":{"message":…}}`` plus a newline.

    As ``handleAPIError`` does, a 500 always says "Internal Server Error" and a 503
    "Service Unavailable Error" (server/handlers.go).
    """
    if status == 500:
        message = "Internal Server Error"
    elif status == 503:
        message = "Service Unavailable Error"
    return json_response(
        {"error": {"message": message}}, status, headers=headers, trailing_newline=True
    )


def go_text_error(status: int, message: str) -> Response:
    """go-livepeer's ``respondWithError`` = Go's ``http.Error``: plain text plus a newline."""
    return Response(
        f"{message}\n".encode(),
        status,
        headers={"X-Content-Type-Options": "nosniff"},
        media_type="text/plain; charset=utf-8",
    )


def go_not_found() -> Response:
    """Go ServeMux's answer for a path no pattern matches."""
    return go_text_error(404, "404 page not found")


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


def ticket_ev(price: int) -> int:
    return max(TICKET_EV_WEI, -(-price // 50))


def auth_token(state: SandboxState, session_id: str, expiration: int) -> dict[str, Any]:
    """go-livepeer ``orchestrator.AuthToken``: an HMAC over the session id and expiry."""
    token = seal(state.hmac_secret, "auth_token", {"sessionId": session_id, "exp": expiration})
    return {"token": token, "sessionId": session_id, "expiration": expiration}


def orchestrator_info(
    state: SandboxState, *, sender: str, price: int, pixels_per_unit: int, session_id: str
) -> str:
    """Sealed stand-in for the protobuf ``net.OrchestratorInfo`` of a challenge.

    Its ticket params and auth token expire ``paymentParamsTtlSeconds`` later (600 s).
    """
    expires = int(time.time() + state.config.payment_params_ttl_seconds)
    return seal(
        state.hmac_secret,
        "payment_params",
        {
            "transcoder": state.settings.public_url,
            "address": state.orchestrator_address,
            "priceInfo": {"pricePerUnit": str(price), "pixelsPerUnit": pixels_per_unit},
            "ticketParams": {
                "recipient": state.orchestrator_address,
                "ev": str(ticket_ev(price)),
                "recipientRandHash": secrets.token_hex(32),
                "sender": sender.lower(),
                "expiresAt": expires,
            },
            "authToken": auth_token(state, session_id, expires),
        },
    )


def new_manifest_id(length: int = 8) -> str:
    """go-livepeer ``core.RandomManifestID``: random bytes as hex (4 bytes = 8 digits)."""
    return secrets.token_hex(length // 2)


def payment_challenge(state: SandboxState, runner: RunnerConfig, sender: str) -> dict[str, Any]:
    """``runnerChallenge``'s 402 body for a fresh session (server/ai_http.go)."""
    public = state.settings.public_url
    manifest = new_manifest_id(runner.manifest_id_length)
    return {
        "payment_params": orchestrator_info(
            state, sender=sender, price=runner.price, pixels_per_unit=1, session_id=manifest
        ),
        "orchestrator": public,
        "manifest_id": manifest,
        "payment_url": f"{public}/apps/{runner.runner_id}/session/{manifest}/payment",
    }
