"""Closing a client's TCP connection with no HTTP response at all.

ASGI has no "drop this connection" message: an app that returns without responding
gets a 500 from uvicorn. :class:`DroppableH11Protocol` is uvicorn's h11 protocol with
one change: every request's scope carries the connection's asyncio transport under
``scope["extensions"]["sandbox.transport"]``. :func:`drop_connection` aborts that
transport, so the client sees ``RemoteDisconnected`` / ``ConnectionResetError``
(curl: "Empty reply from server"), which is how go-livepeer's nil-pointer panic looks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

TRANSPORT_EXTENSION = "sandbox.transport"
DROPPED_EXTENSION = "sandbox.dropped"


class ConnectionDroppedError(RuntimeError):
    """Raised when a drop is requested but the server gave no transport (e.g. in-process)."""


class DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the transport to the app (one instance per connection)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def app_with_transport(scope: Any, receive: Any, send: Any) -> None:
            extensions = scope.get("extensions")
            if extensions is None:
                extensions = scope["extensions"] = {}
            extensions[TRANSPORT_EXTENSION] = transport
            await inner(scope, receive, send)

        self.app = app_with_transport


async def drop_connection(scope: Any) -> None:
    """Abort the request's connection without writing a byte.

    After ``abort()`` the event loop calls ``connection_lost`` on its next turns, which
    marks uvicorn's cycle disconnected, so returning from the app then writes nothing.
    """
    extensions = scope.get("extensions") or {}
    transport = extensions.get(TRANSPORT_EXTENSION)
    if transport is None:
        raise ConnectionDroppedError("connection drop requested without a droppable transport")
    extensions[DROPPED_EXTENSION] = True
    transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)
