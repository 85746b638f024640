"""The Livepeer surface: remote signer, live-runner apps and the AI gateway batch API."""

from __future__ import annotations

from starlette.routing import BaseRoute

from sandbox.livepeer import gateway, runner, signer

routes: list[BaseRoute] = [*signer.routes, *runner.routes, *gateway.routes]

__all__ = ["routes"]
