"""Small HTTP helpers shared by the route modules (JSON bodies, credentials, forms)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import logging
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.state import SandboxState

logger = logging.getLogger(__name__)

JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: ``scope["extensions"]`` key of the request's log record (set by the fault middleware).
RECORD_EXTENSION = "sandbox.record"


def note_request(request: Request, **fields: Any) -> None:
    """Add non-secret ``fields`` to this request's ``/__sandbox/requests`` record."""
    record = (request.scope.get("extensions") or {}).get(RECORD_EXTENSION)
    if isinstance(record, dict):
        record.update(fields)


def json_response(
    content: Any,
    status: int = 200,
    *,
    headers: dict[str, str] | None = None,
    media_type: str = JSON,
    trailing_newline: bool = False,
) -> Response:
    """Compact JSON in key order (Next.js/Go style); media_type JSON_UTF8 for library routes."""
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    if trailing_newline:
        body += "\n"
    return Response(body.encode(), status_code=status, headers=headers, media_type=media_type)


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the Authorization header carried. Never logged."""

    scheme: str | None  # "basic" | "bearer" | None
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None


def _form_decode(component: str) -> str:
    """RFC 6749 App. B: Basic credentials are form-urlencoded before base64."""
    try:
        return urllib.parse.unquote_plus(component, errors="strict")
    except UnicodeDecodeError:
        return component


def parse_authorization(request: Request) -> Credentials:
    return parse_authorization_header(request.headers.get("authorization", ""))


def parse_authorization_header(header: str) -> Credentials:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials(scheme="basic")
        client_id, separator, client_secret = decoded.partition(":")
        if not separator:
            return Credentials(scheme="basic", client_id=_form_decode(client_id))
        return Credentials(
            scheme="basic",
            client_id=_form_decode(client_id),
            client_secret=_form_decode(client_secret),
        )
    if scheme.lower() == "bearer" and value:
        return Credentials(scheme="bearer", token=value)
    return Credentials(scheme=None)


def secret_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == FORM_CONTENT_TYPE


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The url-encoded body as ordered pairs (repeatable fields such as ``caps`` kept)."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return []
    return urllib.parse.parse_qsl(text, keep_blank_values=True)


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def every(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in pairs if key == name]


class InvalidJSONError(ValueError):
    pass


async def read_json(request: Request) -> Any:
    """Parse the JSON body; raise InvalidJSONError if it is not JSON."""
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSONError(str(exc)) from exc
