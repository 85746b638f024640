"""The pymthouse billing-server surface (docs/upstream.md, pymthouse)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from sandbox.pymthouse import billing, browser, checkout, exchange, oidc, usage, users

routes: list[BaseRoute] = [
    *oidc.routes,
    *browser.routes,
    *exchange.routes,
    *users.routes,
    *usage.routes,
    *billing.routes,
    *checkout.routes,
]

__all__ = ["routes"]
