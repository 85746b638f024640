"""The pymthouse billing-server surface (docs/upstream.md, pymthouse)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from sandbox.pymthouse import browser, exchange, oidc, usage, users

routes: list[BaseRoute] = [
    *oidc.routes,
    *browser.routes,
    *exchange.routes,
    *users.routes,
    *usage.routes,
]

__all__ = ["routes"]
