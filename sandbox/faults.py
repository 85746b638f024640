"""ASGI middleware for every non-control request: request log, global latency, faults.

Order per request: log it, sleep ``latencySeconds``, then apply the first matching
fault (consuming one of its ``times``): sleep its ``delay``; then drop the connection,
or answer its ``status``/``body``/``headers``, or (delay only) serve normally.

Those faults act before the handler runs, so nothing behind them happens: a signer
payment answered 500 or dropped by a fault never issues a ticket (and a delay-only fault
past the client's read timeout finds the client gone: the handler's body read sees the
disconnect and it issues nothing either). An ``answerLost`` fault acts after the
handler: the request is served exactly as without a fault (a payment issues its ticket,
records its usage event and debits the user), then the answer is lost:

* ``"stall"``: held ``delay`` seconds, then sent (to a client that gave up waiting);
* ``"drop"``: after the optional ``delay``, the connection is aborted without a byte.

Its log record keeps the handler's ``status`` (what the server did) with
``answerLost`` set; a dropped one also has ``dropped``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.keys import unverified_claims
from sandbox.state import Fault, SandboxState, iso_millis
from sandbox.transport import DROPPED_EXTENSION, drop_connection
from sandbox.web import RECORD_EXTENSION, Credentials, parse_authorization_header

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/__sandbox"
ANSWER_LOST_KINDS = ("stall", "drop")


def describe_caller(credentials: Credentials) -> dict[str, Any]:
    """Who called, for the request log: ids and claims only, never a secret or token."""
    if credentials.scheme == "basic":
        return {"auth": "basic", "clientId": credentials.client_id, "externalUserId": None}
    if credentials.scheme == "bearer":
        claims = unverified_claims(credentials.token or "")
        client_id = claims.get("client_id")
        external_user_id = claims.get("external_user_id")
        return {
            "auth": "bearer",
            "clientId": client_id if isinstance(client_id, str) else None,
            "externalUserId": external_user_id if isinstance(external_user_id, str) else None,
        }
    return {"auth": None, "clientId": None, "externalUserId": None}


def fault_response(fault: Fault) -> Response:
    headers = dict(fault.headers)
    has_content_type = any(name.lower() == "content-type" for name in headers)
    if fault.body is None:
        content, media_type = b"", None
    elif isinstance(fault.body, str):
        content, media_type = fault.body.encode(), "text/plain; charset=utf-8"
    else:
        content = json.dumps(fault.body, separators=(",", ":")).encode()
        media_type = "application/json"
    return Response(
        content,
        status_code=fault.status or 200,
        headers=headers,
        media_type=None if has_content_type else media_type,
    )


class SandboxMiddleware:
    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.state
        method: str = scope["method"]
        path: str = scope["path"]
        headers = Headers(scope=scope)
        credentials = parse_authorization_header(headers.get("authorization", ""))
        client = scope.get("client")
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            # The caller's address and port: one value per TCP connection.
            "peer": f"{client[0]}:{client[1]}" if client else None,
            "host": headers.get("host"),
            **describe_caller(credentials),
            "status": None,
            "time": iso_millis(datetime.now(UTC)),
            "faultId": None,
            "dropped": False,
            "answerLost": None,
        }
        state.request_log.append(record)
        extensions = scope.get("extensions")
        if extensions is None:
            extensions = scope["extensions"] = {}
        extensions[RECORD_EXTENSION] = record  # handlers add fields (note_request)

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        if state.config.latency_seconds > 0:
            await asyncio.sleep(state.config.latency_seconds)
        fault = state.take_fault(method, path)
        if fault is not None and fault.answer_lost is not None:
            record["faultId"] = fault.id
            await self._serve_then_lose(fault, scope, receive, send, record)
            return
        if fault is not None:
            record["faultId"] = fault.id
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                record["dropped"] = True
                await drop_connection(scope)
                return
            if fault.status is not None:
                await fault_response(fault)(scope, receive, send_and_record)
                return
        await self.app(scope, receive, send_and_record)
        if (scope.get("extensions") or {}).get(DROPPED_EXTENSION):
            record["status"] = None
            record["dropped"] = True

    async def _serve_then_lose(
        self, fault: Fault, scope: Scope, receive: Receive, send: Send, record: dict[str, Any]
    ) -> None:
        """Run the handler to completion (its side effects happen), then lose its answer."""
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            held.append(message)

        await self.app(scope, receive, hold)
        record["answerLost"] = fault.answer_lost
        logger.info(
            "fault %s: %s %s served %s, answer %s",
            fault.id,
            scope["method"],
            scope["path"],
            record["status"],
            "stalled" if fault.answer_lost == "stall" else "dropped",
        )
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.answer_lost == "drop":
            record["dropped"] = True
            await drop_connection(scope)
            return
        for message in held:  # uvicorn discards these if the client is gone
            await send(message)
