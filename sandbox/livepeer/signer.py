"""The remote signer at ``{public}/signer`` (docs/upstream.md §L1, §L2).

Every route needs ``Authorization: Bearer`` with a sandbox-minted ``sign:job`` JWT (signer
JWT or programmatic user token). ``generate-live-payment`` is where money moves: it
gates on the caller's spendable balance (483), records ONE usage event per ticket and
debits the user, atomically.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.livepeer.common import SignJobAuthError, go_error, sign_job_caller
from sandbox.livepeer.tickets import (
    PAYMENT_TTL_SECONDS,
    SealError,
    runner_catalog,
    seal,
    sign_state,
    unseal,
    verify_state,
)
from sandbox.state import InsufficientBalanceError
from sandbox.web import InvalidJSONError, get_state, json_response, read_json

logger = logging.getLogger(__name__)

PER_PIXEL_TYPES = ("", "pixel")


async def discover_orchestrators(request: Request) -> Response:
    """One orchestrator; two single-shot runners per model. ``caps``/``app`` filter runners."""
    state = get_state(request)
    try:
        sign_job_caller(state, request)
    except SignJobAuthError as exc:
        return go_error(401, str(exc))
    public = state.settings.public_url
    wanted_models = {
        cap.split("/", 1)[1] for cap in request.query_params.getlist("caps") if "/" in cap
    }
    wanted_app = request.query_params.get("app")
    runners: list[dict[str, Any]] = []
    for name, model in runner_catalog(state.settings.models).items():
        app = f"image-generation/{model}"
        if (wanted_models and model not in wanted_models) or (wanted_app and wanted_app != app):
            continue
        runners.append(
            {
                "url": f"{public}/runner/{name}/image",
                "app": app,
                "mode": "single-shot",
                "gpu": "sandbox-gpu",
                "capacity": 100,
                "capacity_used": 0,
                "capacity_available": 100,
                "price_info": {
                    "price": state.config.price_per_pixel_wei,
                    "currency": "wei",
                    "unit": "pixel",
                },
            }
        )
    if not runners:
        return json_response([])
    models = dict.fromkeys(str(runner["app"]).split("/", 1)[1] for runner in runners)
    return json_response(
        [
            {
                "address": public,
                "score": 1,
                "capabilities": [f"text-to-image/{model}" for model in models],
                "runners": runners,
            }
        ]
    )


async def sign_orchestrator_info(request: Request) -> Response:
    state = get_state(request)
    try:
        sign_job_caller(state, request)
    except SignJobAuthError as exc:
        return go_error(401, str(exc))
    signature = hashlib.shake_256(state.hmac_secret + b"orchestrator-info").hexdigest(65)
    return json_response({"address": state.signer_address, "signature": f"0x{signature}"})


def _field(body: dict[str, Any], name: str) -> Any:
    """Go's case-insensitive key match (``ManifestID`` has no json tag upstream)."""
    if name in body:
        return body[name]
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


async def generate_live_payment(request: Request) -> Response:
    state = get_state(request)
    try:
        claims = sign_job_caller(state, request)
    except SignJobAuthError as exc:
        return go_error(401, str(exc))
    external_user_id: str = claims["external_user_id"]
    try:
        body = await read_json(request)
    except InvalidJSONError as exc:
        return go_error(400, f"invalid request body: {exc}")
    if not isinstance(body, dict):
        return go_error(400, "request body must be a JSON object")
    try:
        params = unseal(state.hmac_secret, "payment_params", _field(body, "orchestrator"))
        previous = _field(body, "state")
        previous_state = verify_state(state.hmac_secret, previous) if previous else None
    except SealError as exc:
        return go_error(400, str(exc))
    runner = str(params["runner"])
    if int(params["expiresAt"]) < time.time():
        return go_error(
            480,
            "payment params expired; refresh the session",
            headers={"Livepeer-Orchestrator-URL": f"{state.settings.public_url}/runner/{runner}"},
        )
    manifest_id = _field(body, "ManifestID") or params["manifestId"]
    if manifest_id != params["manifestId"]:
        return go_error(400, "ManifestID does not match the payment params")
    payment_type = _field(body, "type") or ""
    if payment_type not in PER_PIXEL_TYPES:
        return go_error(
            400, f"payment type {payment_type!r} does not match runner price unit pixel"
        )
    pixels = _positive_int(_field(body, "inPixels"))
    if pixels is None:
        return go_error(400, "inPixels must be a positive integer for per-pixel pricing")
    price = int(params["pricePerUnit"])
    max_price = _field(body, "maxPrice")
    if isinstance(max_price, dict) and max_price.get("price") is not None:
        limit = _positive_int(max_price.get("price"))
        if limit is None or limit < price:
            return go_error(481, "orchestrator price exceeds the max price")

    gateway_request_id = _field(body, "gatewayRequestId")
    model_id = _field(body, "modelId")
    try:
        event = state.charge(
            external_user_id=external_user_id,
            pixels=pixels,
            model_id=model_id if isinstance(model_id, str) and model_id else params["modelId"],
            manifest_id=manifest_id,
            gateway_request_id=gateway_request_id if isinstance(gateway_request_id, str) else None,
            source="signer",
            price_per_pixel_wei=price,
            enforce_balance=state.config.open_meter_enabled,
        )
    except InsufficientBalanceError:
        return go_error(483, "insufficient balance")

    sequence = int(previous_state.get("seq", 0)) + 1 if previous_state else 1
    payment = seal(
        state.hmac_secret,
        "payment",
        {
            "ticketId": event.event_id,
            "manifestId": manifest_id,
            "runner": runner,
            "feeWei": str(event.fee_wei),
            "pixels": pixels,
            "sender": state.signer_address,
            "expiresAt": int(time.time()) + PAYMENT_TTL_SECONDS,
        },
    )
    seg_creds = seal(
        state.hmac_secret,
        "segcreds",
        {"manifestId": manifest_id, "seqNo": sequence, "nonce": secrets.token_hex(8)},
    )
    return json_response(
        {
            "payment": payment,
            "segCreds": seg_creds,
            "state": sign_state(state.hmac_secret, {"manifestId": manifest_id, "seq": sequence}),
        }
    )


routes = [
    Route("/signer/discover-orchestrators", discover_orchestrators, methods=["GET"]),
    Route("/signer/sign-orchestrator-info", sign_orchestrator_info, methods=["POST"]),
    Route("/signer/generate-live-payment", generate_live_payment, methods=["POST"]),
]
