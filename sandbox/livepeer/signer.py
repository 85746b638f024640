"""The remote signer at ``{public}/signer`` (go-livepeer ``server/remote_signer.go`` @176aa415).

``generate-live-payment`` follows ``GenerateLivePayment`` step by step: decode, payment
params, signed state, manifest, refresh (480), billable units from ``type``,
``maxPrice`` (400 / 481), tickets (482 / 400), then the auth webhook (pymthouse: the
``sign:job`` Bearer, 401, and its balance refusal 483), then ONE ``create_signed_ticket``
usage event as pymthouse's metering collector records it: ``gatewayRequestId`` is the
signer's own request id, ``modelId`` is ``unknown``, ``pipeline`` comes from ``type``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from fractions import Fraction
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.config import RUNNER_UNITS
from sandbox.livepeer.common import (
    SignJobAuthError,
    go_error,
    new_manifest_id,
    sign_job_caller,
)
from sandbox.livepeer.tickets import SealError, seal, sign_state, unseal, verify_state
from sandbox.state import InsufficientBalanceError, SandboxState
from sandbox.web import get_state, json_response, note_request

logger = logging.getLogger(__name__)

# RemoteType_* -> the maxPrice unit it requires (parseRemotePaymentMaxPrice).
TYPE_UNITS = {"live": "seconds", "lv2v": "720p-pixel-seconds", "fixed": "fixed"}
# The create_signed_ticket "pipeline"; the collector writes "unknown" for "".
TYPE_PIPELINES = {"lv2v": "live-video-to-video", "live": "live", "fixed": "fixed"}
LIVE_FIRST_SECONDS = 10  # type "live": 10 s on the first payment
LV2V_FIRST_SECONDS = 60  # type "lv2v": 60 s preloaded on the first payment
LV2V_PIXELS_PER_SECOND = 1280 * 720 * 30  # defaultSegInfo (server/live_payment_processor.go)
MAX_TICKETS = 100
GO_REQUEST_TYPE = "server.RemotePaymentRequest"


class SignerError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers

    def response(self) -> Response:
        return go_error(self.status, str(self), headers=self.headers)


def _runner_json(state: SandboxState) -> list[dict[str, Any]]:
    """Runners as remote discovery keeps them: invalid units and prices are filtered out."""
    public = state.settings.public_url
    runners = []
    for runner in state.runners.values():
        if runner.unit not in RUNNER_UNITS or runner.price <= 0:
            continue  # remote_discovery.go validateRunnerPrice: "unsupported unit"
        runners.append(
            {
                "url": f"{public}/apps/{runner.runner_id}/app",
                "app": runner.app,
                "mode": "single-shot",
                "capacity": runner.capacity,
                "capacity_used": len(runner.sessions),
                "capacity_available": runner.capacity - len(runner.sessions),
                "price_info": {"price": runner.price, "currency": "wei", "unit": runner.unit},
            }
        )
    return runners


async def discover_orchestrators(request: Request) -> Response:
    """``GetOrchestrators``: 503 while the cache is empty; ``caps`` selects orchestrators.

    A runner's ``app`` is one of its orchestrator's capabilities; ``caps`` (repeatable,
    OR) keeps the orchestrators that have one of them, with all their runners.
    """
    state = get_state(request)
    try:
        sign_job_caller(state, request)
    except SignJobAuthError as exc:
        return go_error(401, str(exc))
    runners = _runner_json(state)
    if state.config.discovery_empty or not runners:
        return go_error(503, "cache empty")
    capabilities = sorted(dict.fromkeys(str(runner["app"]) for runner in runners))
    wanted = [cap for cap in request.query_params.getlist("caps") if cap]
    if wanted and not set(wanted) & set(capabilities):
        return json_response([], trailing_newline=True)
    orchestrator = {
        "address": state.settings.public_url,
        "score": 1,
        "capabilities": capabilities,
        "runners": runners,
    }
    return json_response([orchestrator], trailing_newline=True)


async def sign_orchestrator_info(request: Request) -> Response:
    state = get_state(request)
    try:
        sign_job_caller(state, request)
    except SignJobAuthError as exc:
        return go_error(401, str(exc))
    signature = hashlib.shake_256(state.hmac_secret + b"orchestrator-info").hexdigest(65)
    return json_response(
        {"address": state.signer_address, "signature": f"0x{signature}"}, trailing_newline=True
    )


def _field(body: dict[str, Any], name: str) -> Any:
    """Go's key match: exact, else case-insensitive (``ManifestID`` has no json tag)."""
    if name in body:
        return body[name]
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


def _go_type_error(field: str, value: Any, go_type: str) -> SignerError:
    kind = {bool: "bool", str: "string", list: "array", dict: "object"}.get(type(value), "number")
    return SignerError(
        400,
        f"json: cannot unmarshal {kind} into Go struct field {GO_REQUEST_TYPE}.{field} "
        f"of type {go_type}",
    )


def _decode_bytes(body: dict[str, Any], field: str) -> str | None:
    """A Go ``[]byte`` field: a base64 string (kept as the string for unsealing)."""
    value = _field(body, field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _go_type_error(field, value, "[]uint8")
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise SignerError(400, f"illegal base64 data in {field}") from exc
    return value


def _decimal(value: Any) -> Fraction | None:
    """A ``json.Number`` read by big.Rat.SetString: an integer or decimal literal."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip() if isinstance(value, int | str) else None
    if text is None:
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _max_price(raw: Any, payment_type: str) -> Fraction | None:
    """``parseRemotePaymentMaxPrice``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _go_type_error("maxPrice", raw, "runner.LiveRunnerPriceInfo")
    price = _decimal(raw.get("price"))
    if price is None or price <= 0:
        raise SignerError(400, "maxPrice.price must be a positive decimal")
    if str(raw.get("currency") or "").strip().lower() != "wei":
        raise SignerError(400, "maxPrice.currency must be wei")
    expected = TYPE_UNITS.get(payment_type)
    if expected is None:
        raise SignerError(400, "maxPrice requires payment type live, lv2v, or fixed")
    if str(raw.get("unit") or "").strip().lower() != expected:
        raise SignerError(400, f"maxPrice.unit must be {expected} for payment type {payment_type}")
    return price


def _float_string(value: Fraction, digits: int) -> str:
    """big.Rat.FloatString: rounded half away from zero to ``digits`` decimals."""
    scaled = value * 10**digits
    whole = int(abs(scaled) + Fraction(1, 2))
    sign = "-" if scaled < 0 and whole else ""
    if digits == 0:
        return f"{sign}{whole}"
    text = str(whole).rjust(digits + 1, "0")
    return f"{sign}{text[:-digits]}.{text[-digits:]}"


def _units(payment_type: str, body: dict[str, Any], last_update: float | None, now: float) -> int:
    billable_secs = (now - last_update) if last_update else 0.0
    if payment_type == "lv2v":
        return int(LV2V_PIXELS_PER_SECOND * (billable_secs if billable_secs > 0 else 60))
    if payment_type == "live":
        seconds = billable_secs if billable_secs > 0 else LIVE_FIRST_SECONDS
        return -int(-seconds // 1)  # ceil
    if payment_type == "fixed":
        return 1
    if payment_type != "":
        raise SignerError(400, "invalid job type")
    in_pixels = _field(body, "inPixels")
    if in_pixels is None:
        return 0
    if isinstance(in_pixels, bool) or not isinstance(in_pixels, int):
        raise _go_type_error("inPixels", in_pixels, "int64")
    return in_pixels


async def generate_live_payment(request: Request) -> Response:
    state = get_state(request)
    request_id = new_manifest_id()  # go-livepeer: core.RandomManifestID() per request
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return go_error(400, "invalid character in request body")
    if body is None:
        return go_error(400, "EOF")
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else "value"
        return go_error(
            400, f"json: cannot unmarshal {kind} into Go value of type {GO_REQUEST_TYPE}"
        )
    # The ceiling exactly as received (not secret), for tests of what the client sends.
    note_request(request, maxPrice=_field(body, "maxPrice"))
    try:
        return _generate(state, request, body, request_id)
    except SignerError as exc:
        return exc.response()


def _generate(
    state: SandboxState, request: Request, body: dict[str, Any], request_id: str
) -> Response:
    orchestrator = _decode_bytes(body, "orchestrator")
    if orchestrator is None:
        raise SignerError(400, "missing orchestrator")
    try:
        info = unseal(state.hmac_secret, "payment_params", orchestrator)
    except SealError as exc:
        raise SignerError(400, "proto: cannot parse invalid wire-format data") from exc
    price = int(info["priceInfo"]["pricePerUnit"])
    pixels_per_unit = int(info["priceInfo"]["pixelsPerUnit"])
    ticket_params = info["ticketParams"]
    payment_type = _field(body, "type") or ""
    if not isinstance(payment_type, str):
        raise _go_type_error("type", payment_type, "string")
    app = _field(body, "app") or ""

    signed = _field(body, "state")
    has_state = isinstance(signed, dict) and bool(signed.get("State") or signed.get("Sig"))
    previous: dict[str, Any] = {}
    if has_state:
        try:
            previous = verify_state(state.hmac_secret, signed)
        except SealError as exc:
            raise SignerError(400, "invalid sig") from exc
        if previous.get("OrchestratorAddress") != info["address"]:
            raise SignerError(400, "orchestratorAddress mismatch")
        if previous.get("App", "") != app:
            raise SignerError(400, "app mismatch")
        if previous.get("Type") and previous.get("Type") != payment_type:
            raise SignerError(400, "job type mismatch")

    manifest_id = _field(body, "ManifestID") or ""
    if not isinstance(manifest_id, str):
        raise _go_type_error("ManifestID", manifest_id, "string")
    if not manifest_id:
        if has_state:
            raise SignerError(400, "missing manifestID")
        manifest_id = new_manifest_id()

    now = time.time()
    if int(ticket_params["expiresAt"]) <= now:
        raise SignerError(
            480,
            "refresh session for remote signer",
            headers={"Livepeer-Orchestrator-URL": str(info["transcoder"])},
        )

    last_update = previous.get("LastUpdate")
    units = _units(payment_type, body, float(last_update) if last_update else None, now)
    if units <= 0:
        raise SignerError(400, "missing billable unit or job type")

    orch_price = Fraction(price, pixels_per_unit)
    ceilings = []
    request_max = _max_price(_field(body, "maxPrice"), payment_type)
    if request_max is not None:
        ceilings.append(("request maxPrice", request_max))
    initial_price = orch_price
    if has_state:
        initial_price = Fraction(
            int(previous["InitialPricePerUnit"]), int(previous["InitialPixelsPerUnit"])
        )
        ceilings.append(("initial session price", initial_price))
    if ceilings:
        source, ceiling = min(ceilings, key=lambda item: item[1])
        if orch_price > ceiling:
            raise SignerError(
                481,
                f"orchestrator price {_float_string(orch_price, 3)} exceeds {source} ceiling "
                f"{_float_string(ceiling, 3)}",
            )

    fee = units * initial_price
    ev = int(ticket_params["ev"])
    same_session = previous.get("PMSessionID") == ticket_params["recipientRandHash"]
    balance = Fraction(str(previous.get("Balance") or "0"))  # restored whatever the session
    min_credit = max(fee, Fraction(ev))
    tickets = 0 if balance >= min_credit else -int(-(min_credit - balance) // ev)
    if tickets <= 0:
        raise SignerError(482, "no tickets")
    if tickets > MAX_TICKETS:
        raise SignerError(400, f"numTickets {tickets} exceeds maximum of {MAX_TICKETS}")

    # The auth webhook (pymthouse): the caller's sign:job Bearer, then its balance gate.
    try:
        claims = sign_job_caller(state, request)
    except SignJobAuthError as exc:
        raise SignerError(401, str(exc)) from exc
    auth_id = f"{state.settings.app_id}:{claims['external_user_id']}"
    if previous.get("AuthID") and previous["AuthID"] != auth_id:
        raise SignerError(500, "remote signer auth ID changed")
    try:
        state.check_balance(claims["external_user_id"])
    except InsufficientBalanceError as exc:
        raise SignerError(483, exc.reason) from exc

    nonce = int(previous.get("SenderNonce", 0)) if same_session else 0
    nonces = list(range(nonce + 1, nonce + tickets + 1))
    new_balance = balance + tickets * ev - fee
    fee_wei = int(_float_string(fee, 0))
    state.charge(
        external_user_id=claims["external_user_id"],
        fee_wei=fee_wei,
        pixels=units if payment_type == "lv2v" else 0,
        model_id="unknown",
        pipeline=TYPE_PIPELINES.get(payment_type, "unknown"),
        manifest_id=manifest_id,
        gateway_request_id=request_id,
        source="signer",
    )
    payment = seal(
        state.hmac_secret,
        "payment",
        {
            "sender": state.signer_address,
            "recipient": ticket_params["recipient"],
            "recipientRandHash": ticket_params["recipientRandHash"],
            "ticketSender": ticket_params["sender"],
            "expectedPrice": {"pricePerUnit": str(price), "pixelsPerUnit": pixels_per_unit},
            "senderNonces": nonces,
            "credit": str(tickets * ev),
        },
    )
    seg_creds = seal(
        state.hmac_secret,
        "segcreds",
        {"manifestId": manifest_id, "sender": state.signer_address, "authToken": info["authToken"]},
    )
    new_state = {
        "StateID": previous.get("StateID") or new_manifest_id(),
        "PMSessionID": ticket_params["recipientRandHash"],
        "LastUpdate": now,
        "OrchestratorAddress": info["address"],
        "App": app,
        "SenderNonce": nonces[-1],
        "Balance": str(new_balance),
        "InitialPricePerUnit": str(initial_price.numerator),
        "InitialPixelsPerUnit": str(initial_price.denominator),
        "Type": payment_type,
        "SequenceNumber": int(previous.get("SequenceNumber", -1)) + 1,
        "AuthID": auth_id,
    }
    return json_response(
        {
            "payment": payment,
            "segCreds": seg_creds,
            "state": sign_state(state.hmac_secret, new_state),
        },
        trailing_newline=True,
    )


routes = [
    Route("/signer/discover-orchestrators", discover_orchestrators, methods=["GET"]),
    Route("/signer/sign-orchestrator-info", sign_orchestrator_info, methods=["POST"]),
    Route("/signer/generate-live-payment", generate_live_payment, methods=["POST"]),
]
