"""Models of the billing app."""

from __future__ import annotations

from billing.usage_models import (
    UsageDrift,
    UsageManifest,
    UsageManifestRevision,
    UsageSyncRun,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)

__all__ = [
    "UsageDrift",
    "UsageManifest",
    "UsageManifestRevision",
    "UsageSyncRun",
    "UsageSyncState",
    "UsageSyncStatus",
    "UsageUserAggregate",
]
