"""The orchestrator's live-runner routes, as go-livepeer 176aa415 serves them.

Sources (livepeer/go-livepeer@176aa415): ``server/ai_http.go`` (route table,
``ProxyLiveRunnerSingleShot``, ``reservePaidLiveRunnerSession``, ``runnerChallenge``,
``PaymentForLiveRunnerSession``), ``server/segment_rpc.go``
(``processPaymentAndSegmentHeaders``, ``verifySegCreds``), ``core/orchestrator.go``
(``ProcessPayment``), ``pm/recipient.go`` (nonce replay), ``server/live_payment.go``
(``AccountPayment``), ``server/rpc.go`` (``RefreshPayment``), ``ai/runner/live_runner.go``
(``ReserveSession``).

Order of a single-shot call ``/apps/{runner_id}/app/{app_path...}``:
no ``Livepeer-Payment`` and no ``Livepeer-Segment`` → 402 challenge (or 402 error without
``Livepeer-Payer-Address``); payment unparsable → 402; segment credentials bad → 403;
manifest ≠ the challenge's session → 403; fixed price ≠ runner price → 400; session
reservation (409 same session in flight, 503 no capacity) BEFORE the payment is processed;
ticket nonces recorded (a replay → 400); fixed fee debited; only then the app runs.
Errors written with Go's ``http.Error`` are plain text, as upstream.
"""

from __future__ import annotations

import json
import logging
import time
from fractions import Fraction
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.livepeer.common import (
    HEX_ADDRESS,
    go_error,
    go_not_found,
    go_text_error,
    orchestrator_info,
    payment_challenge,
)
from sandbox.livepeer.image_app import serve_app
from sandbox.livepeer.tickets import SealError, unseal
from sandbox.runners import RunnerConfig
from sandbox.state import SandboxState
from sandbox.web import get_state, json_response

logger = logging.getLogger(__name__)

PAYMENT_HEADER = "livepeer-payment"
SEGMENT_HEADER = "livepeer-segment"
SENDER_HEADER = "livepeer-payer-address"
NON_FIXED_UNITS = ("seconds", "720p-pixel-seconds")
REFRESH_TYPE = "server.refreshPaymentParamsRequest"


class OrchestratorError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        return go_text_error(self.status, str(self))


async def redirect_to_slash(request: Request) -> Response:
    """Go ServeMux: ``…/app`` matches ``…/app/{app_path...}`` only with the slash → 301.

    The Location is the slashed path (query kept). A GET or HEAD gets Go's small HTML
    body; any other method (a POST, whose body the redirect loses) gets none.
    """
    location = request.url.path + "/"
    if request.url.query:
        location += "?" + request.url.query
    if request.method in ("GET", "HEAD"):
        body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
        return Response(
            body, 301, headers={"Location": location}, media_type="text/html; charset=utf-8"
        )
    return Response(b"", 301, headers={"Location": location})


def _challenge(state: SandboxState, request: Request, runner: RunnerConfig) -> Response:
    """``runnerChallenge``: 402 with fresh payment params, bound to the payer's address."""
    sender = request.headers.get(SENDER_HEADER, "")
    if not HEX_ADDRESS.match(sender):
        return go_error(402, "invalid live runner payment signer address")
    body = payment_challenge(state, runner, "0x" + sender[-40:])
    return json_response(body, 402)


def _parse_payment(state: SandboxState, header: str) -> dict[str, Any]:
    """``getPayment``: an empty header is an empty payment (sender 0x0), not an error."""
    if not header:
        return {"sender": "0x" + "0" * 40}
    try:
        return unseal(state.hmac_secret, "payment", header)
    except SealError as exc:
        raise OrchestratorError(402, "protobuf unmarshal error: invalid wire-format data") from exc


def _verify_segment(state: SandboxState, header: str, sender: str) -> dict[str, Any]:
    """``verifySegCreds``: signed by the payment's sender, with a valid auth token."""
    try:
        segment = unseal(state.hmac_secret, "segcreds", header)
    except SealError as exc:
        raise OrchestratorError(403, "ErrSegSig") from exc
    if segment.get("sender") != sender:
        raise OrchestratorError(403, "ErrSegSig")
    token = segment.get("authToken") or {}
    try:
        sealed = unseal(state.hmac_secret, "auth_token", token.get("token"))
    except SealError as exc:
        raise OrchestratorError(403, "invalid auth token") from exc
    if sealed.get("sessionId") != token.get("sessionId") or sealed.get("exp") != token.get(
        "expiration"
    ):
        raise OrchestratorError(403, "invalid auth token")
    if time.time() > int(token["expiration"]):
        raise OrchestratorError(403, "expired auth token")
    return segment


def _process_payment(
    state: SandboxState, payment: dict[str, Any], manifest_id: str
) -> tuple[str, Fraction]:
    """``orchestrator.ProcessPayment``: fix the session price, record nonces, credit EV."""
    sender = str(payment["sender"])
    expected = payment.get("expectedPrice") or {}
    price = Fraction(int(expected.get("pricePerUnit", 0)), int(expected.get("pixelsPerUnit", 1)))
    key = (sender, manifest_id)
    state.fixed_prices.setdefault(key, (price.numerator, price.denominator))
    if payment.get("ticketSender") != sender:
        raise OrchestratorError(400, "invalid recipientRand for recipientRandHash")
    rand_hash = payment["recipientRandHash"]
    nonces = [int(nonce) for nonce in payment.get("senderNonces", [])]
    seen = [nonce for nonce in nonces if f"{rand_hash}:{nonce}" in state.used_tickets]
    for nonce in nonces:
        state.used_tickets.add(f"{rand_hash}:{nonce}")
    if seen:
        raise OrchestratorError(
            400, f"invalid ticket senderNonce: already seen sender={sender} nonce={seen[0]}"
        )
    state.orch_balances[key] = state.orch_balances.get(key, 0) + int(payment.get("credit", 0))
    return sender, price


def _check_paid_call(
    state: SandboxState, request: Request, runner: RunnerConfig
) -> tuple[dict[str, Any], str]:
    """Everything ``reservePaidLiveRunnerSession`` checks before it processes the payment."""
    payment = _parse_payment(state, request.headers.get(PAYMENT_HEADER, ""))
    segment = _verify_segment(
        state, request.headers.get(SEGMENT_HEADER, ""), str(payment["sender"])
    )
    manifest_id = str(segment["manifestId"])
    if manifest_id != segment["authToken"]["sessionId"]:
        raise OrchestratorError(403, "mismatched manifest and auth token")
    expected = payment.get("expectedPrice") or {}
    if runner.unit == "fixed":
        if (
            str(expected.get("pricePerUnit")) != str(runner.price)
            or int(expected.get("pixelsPerUnit", 0)) != 1
        ):
            raise OrchestratorError(400, "payment price does not match live runner price")
    elif runner.unit not in NON_FIXED_UNITS:
        raise OrchestratorError(500, f'unsupported live runner payment unit "{runner.unit}"')
    # manager.ReserveSession(runnerID, manifest) runs before the payment is processed.
    if manifest_id in runner.sessions:
        raise OrchestratorError(409, "session already exists")
    if len(runner.sessions) >= runner.capacity:
        raise OrchestratorError(503, "no capacity available for runner")
    return payment, manifest_id


def _pay(state: SandboxState, runner: RunnerConfig, payment: dict[str, Any], manifest: str) -> None:
    """``ProcessPayment``, then for a fixed price ``AccountPayment`` of one unit."""
    sender, price = _process_payment(state, payment, manifest)
    if runner.unit != "fixed":
        return  # seconds / 720p: debited by the payment processor as time passes
    key = (sender, manifest)
    balance = state.orch_balances.get(key, 0)
    if price > 0 and balance < price:
        raise OrchestratorError(
            400, f"insufficient balance, mid={manifest}, fee={round(price)}, balance={balance}"
        )
    state.orch_balances[key] = int(balance - price)


async def single_shot(request: Request) -> Response:
    state = get_state(request)
    runner = state.runners.get(request.path_params["runner_id"])
    if runner is None:
        return go_text_error(404, "runner not found")
    if not request.headers.get(PAYMENT_HEADER) and not request.headers.get(SEGMENT_HEADER):
        return _challenge(state, request, runner)
    try:
        payment, manifest_id = _check_paid_call(state, request, runner)
    except OrchestratorError as exc:
        return exc.response()
    runner.sessions.add(manifest_id)
    try:
        try:
            _pay(state, runner, payment, manifest_id)
        except OrchestratorError as exc:
            return exc.response()
        return await serve_app(state, runner, request, request.path_params["app_path"])
    finally:
        runner.sessions.discard(manifest_id)


async def reserve_session(request: Request) -> Response:
    """``POST /apps/{runner_id}/session``: only persistent runners have sessions."""
    runner = get_state(request).runners.get(request.path_params["runner_id"])
    if runner is None:
        return go_text_error(404, "runner not found")
    return go_text_error(400, "only persistent runners have sessions")


async def session_payment(request: Request) -> Response:
    """``PaymentForLiveRunnerSession``: only for a live, non-fixed session."""
    if request.method != "POST":
        return go_text_error(405, "Method Not Allowed")
    state = get_state(request)
    runner = state.runners.get(request.path_params["runner_id"])
    if runner is None:
        return go_text_error(404, "runner not found")
    session_id = request.path_params["session_id"]
    if session_id not in runner.sessions:
        return go_text_error(404, "session not found")
    if runner.unit == "fixed":
        return go_text_error(
            409, "fixed-price live runner sessions do not accept follow-up payments"
        )
    try:
        payment = _parse_payment(state, request.headers.get(PAYMENT_HEADER, ""))
        segment = _verify_segment(
            state, request.headers.get(SEGMENT_HEADER, ""), str(payment["sender"])
        )
    except OrchestratorError as exc:
        return exc.response()
    if segment["manifestId"] != session_id:
        return go_text_error(403, "mismatched session and payment manifest")
    try:
        _process_payment(state, payment, session_id)
    except OrchestratorError as exc:
        return exc.response()
    return Response(b"", 200)


async def refresh_payment(request: Request) -> Response:
    """``POST {orch}/refresh-payment`` ``{sender, manifest_id}`` (server/rpc.go RefreshPayment)."""
    state = get_state(request)
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return go_error(400, "invalid character in request body")
    if not isinstance(body, dict):
        return go_error(400, f"json: cannot unmarshal into Go value of type {REFRESH_TYPE}")
    sender = body.get("sender")
    if not isinstance(sender, str) or not HEX_ADDRESS.match(sender):
        return go_error(400, "invalid sender")
    manifest_id = body.get("manifest_id")
    if not isinstance(manifest_id, str) or not manifest_id.strip():
        return go_error(400, "missing manifest_id")
    manifest_id = manifest_id.strip()
    normalized = "0x" + sender[-40:]
    fixed = next(
        (
            price
            for (key_sender, key_manifest), price in state.fixed_prices.items()
            if key_sender.lower() == normalized.lower() and key_manifest == manifest_id
        ),
        None,
    )
    if fixed is None:
        return go_error(409, "fixed price not found for session")
    public = state.settings.public_url
    params = orchestrator_info(
        state,
        sender=normalized,
        price=fixed[0],
        pixels_per_unit=fixed[1],
        session_id=manifest_id,
    )
    return json_response(
        {
            "payment_params": params,
            "orchestrator": public,
            "manifest_id": manifest_id,
            "payment_url": f"{public}/payment",
        }
    )


async def not_found(request: Request) -> Response:
    return go_not_found()


ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

routes = [
    Route("/apps/{runner_id}/app", redirect_to_slash, methods=ANY),
    Route("/apps/{runner_id}/app/{app_path:path}", single_shot, methods=ANY),
    Route("/apps/{runner_id}/session", reserve_session, methods=["POST"]),
    Route("/apps/{runner_id}/session/{session_id}/payment", session_payment, methods=ANY),
    Route("/refresh-payment", refresh_payment, methods=["POST"]),
    Route("/apps/{rest:path}", not_found, methods=ANY),
]
