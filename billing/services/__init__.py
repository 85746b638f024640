"""Billing services (writes). The usage mirror lives in ``usage_sync``."""

from __future__ import annotations
