"""Shared helpers of the billing routes: the two auth classes (§3), tolerant and strict
JSON, ``parseTopUpAmountUsd``, return URLs and the merchant subject rule."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from sandbox.state import SandboxState
from sandbox.web import json_response, parse_authorization, secret_matches

logger = logging.getLogger(__name__)

DOCS_URL = "https://docs.pymthouse.com/billing/pay-as-you-go"
BILLING_UNAVAILABLE = "Billing is not available right now"
EXT_REQUIRED_MERCHANT = "externalUserId is required when billingMode is merchant"
OWNER_WALLET = (
    "App retail subscription mutations cannot target the owner wallet; use Owner Paid billing APIs"
)
OPENMETER_NOT_CONFIGURED = (
    "OpenMeter is not configured (set OPENMETER_URL; OPENMETER_API_KEY only for secured "
    "deployments)"
)
TIMING_ERROR = 'timing must be "immediate" or "next_billing_cycle"'
TIMINGS = ("immediate", "next_billing_cycle")
_AMOUNT = re.compile(r"\d{1,5}(\.\d{1,2})?", re.ASCII)
TOP_UP_MIN_USD_MICROS = 1_000_000
TOP_UP_MAX_USD_MICROS = 10_000_000_000


# --- helpers ----------------------------------------------------------------------------


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


def not_found() -> Response:
    return error_response(404, "Not found")


def m2m_strict(state: SandboxState, request: Request) -> bool:
    settings = state.settings
    credentials = parse_authorization(request)
    return (
        credentials.scheme == "basic"
        and request.path_params["app"] == settings.app_id
        and credentials.client_id == settings.m2m_client_id
        and secret_matches(credentials.client_secret, settings.m2m_client_secret)
    )


def app_client(state: SandboxState, request: Request) -> bool:
    """Any confidential sibling of the app (``m2m_…`` or ``web_…``) with its secret."""
    settings = state.settings
    credentials = parse_authorization(request)
    if credentials.scheme != "basic" or request.path_params["app"] != settings.app_id:
        return False
    pairs = {
        settings.m2m_client_id: settings.m2m_client_secret,
        settings.web_client_id: settings.web_client_secret,
    }
    expected = pairs.get(credentials.client_id or "")
    return expected is not None and secret_matches(credentials.client_secret, expected)


async def tolerant_json(request: Request) -> dict[str, Any]:
    """pymthouse's ``readJsonBody``: malformed or non-object bodies read as ``{}``."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


class InvalidJSONBodyError(Exception):
    """A strict-JSON route's body is not a JSON object (``400 Invalid JSON``)."""


async def strict_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSONBodyError from exc
    if not isinstance(body, dict):
        raise InvalidJSONBodyError
    return body


def clean_ext(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_amount_usd(value: object) -> tuple[int | None, str | None]:
    """``parseTopUpAmountUsd``: (micros, None) or (None, the 400 message) (T#16–T#22)."""
    if value is None or value == "":
        return None, 'amountUsd is required (e.g. "25.00")'
    if isinstance(value, bool):
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value) if value != int(value) else str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    if not _AMOUNT.fullmatch(text):
        return None, "amountUsd must be a positive dollar amount with up to 2 decimals"
    whole, _, cents = text.partition(".")
    micros = int(whole) * 1_000_000 + int(cents.ljust(2, "0") or "0") * 10_000
    if not TOP_UP_MIN_USD_MICROS <= micros <= TOP_UP_MAX_USD_MICROS:
        return None, "amountUsd must be between $1.00 and $10,000.00"
    return micros, None


def return_url(value: object, fallback: str) -> str:
    """https, or http on loopback; otherwise the fallback (pymthouse's dashboard URL)."""
    if isinstance(value, str):
        parts = urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value
    return fallback


def dashboard_url(state: SandboxState, suffix: str) -> str:
    return f"{state.settings.public_url}{suffix}"


def checkout_url(state: SandboxState, session_id: str) -> str:
    return f"{state.settings.public_url}/checkout/c/pay/{session_id}"


def subject_ext(
    state: SandboxState, request: Request, external_user_id: str | None = None
) -> tuple[str | None, Response | None]:
    ext = external_user_id or clean_ext(request.query_params.get("externalUserId"))
    if state.billing.is_merchant and ext is None:
        return None, error_response(400, EXT_REQUIRED_MERCHANT)
    return ext, None
