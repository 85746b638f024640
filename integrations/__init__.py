"""Clients of external HTTP APIs. Nothing outside this package imports ``requests``."""

from __future__ import annotations
