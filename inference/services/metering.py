"""What the network metered for a generation, reported by the usage mirror."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from inference.models import Generation

MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class MeteredCost:
    fee_wei: int
    network_fee_usd_micros: int


def generations_cost_record(*, costs: dict[uuid.UUID, MeteredCost]) -> int:
    """Record the metered cost of generations that have none yet; returns rows written.

    Rows are updated in primary-key order, and the caller takes no account lock before
    this (lock order everywhere: generation rows, then account rows; see
    docs/usage-mirror.md). A USD amount too large for the column is left empty.
    """
    written = 0
    for pk in sorted(costs):
        cost = costs[pk]
        usd = cost.network_fee_usd_micros
        written += Generation.objects.filter(pk=pk, cost_wei__isnull=True).update(
            cost_wei=cost.fee_wei, cost_usd_micros=usd if 0 <= usd <= MAX_BIGINT else None
        )
    return written
