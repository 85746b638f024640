"""``build_app(settings) -> Starlette``: every route of the sandbox in one ASGI app."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from sandbox import control, livepeer, pymthouse
from sandbox.config import SandboxSettings
from sandbox.faults import SandboxMiddleware
from sandbox.state import SandboxState
from sandbox.web import json_response

logger = logging.getLogger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer JSON (the real Next.js 404 is an HTML page)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405 and request.url.path.startswith("/api/v1/apps/"):
        # Next.js route handlers: 405, empty body, no Content-Type, no Allow (T#124-T#127).
        return Response(status_code=405)
    if status == 405:
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
        return json_response({"error": "Method not allowed"}, 405, headers=headers)
    return json_response({"error": "Not found"}, status)


def build_app(settings: SandboxSettings, state: SandboxState | None = None) -> Starlette:
    sandbox_state = state or SandboxState(settings)
    routes: list[BaseRoute] = [*pymthouse.routes, *livepeer.routes, *control.routes]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SandboxMiddleware, state=sandbox_state)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.router.redirect_slashes = False
    app.state.sandbox = sandbox_state
    return app
