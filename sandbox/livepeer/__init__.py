"""The Livepeer surface: remote signer, orchestrator live-runner routes and apps, AI gateway."""

from __future__ import annotations

from starlette.routing import BaseRoute

from sandbox.livepeer import gateway, image_app, orchestrator, signer

routes: list[BaseRoute] = [
    *signer.routes,
    *orchestrator.routes,
    *image_app.routes,
    *gateway.routes,
]

__all__ = ["routes"]
