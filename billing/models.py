"""Models of the billing app (filled in by later issues)."""

from __future__ import annotations
