"""The Livepeer surface: remote signer, live-runner apps and the AI gateway batch API."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []

__all__ = ["routes"]
