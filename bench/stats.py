"""Samples of one run and the summary figures computed from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, interpolating linearly between closest ranks.

    Same definition as numpy's default (``method="linear"``), so p50 is the median.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Sample:
    """One generation: client-side end to end, plus named stage durations (seconds)."""

    end_to_end: float
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """One batch of N generations at a fixed concurrency (closed loop)."""

    label: str
    samples: list[Sample]
    wall_seconds: float
    runner_latency: float
    upstream_calls: dict[str, int] = field(default_factory=dict)
    #: CPU seconds each component used during the batch ("bench client" = this process).
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def pooled(cls, label: str, batches: Sequence[RunResult]) -> RunResult:
        """Several batches as one: samples, wall clock, calls and CPU time add up."""
        calls: dict[str, int] = {}
        cpu: dict[str, float] = {}
        for batch in batches:
            for key, value in batch.upstream_calls.items():
                calls[key] = calls.get(key, 0) + value
            for name, seconds in batch.cpu_seconds.items():
                cpu[name] = cpu.get(name, 0.0) + seconds
        return cls(
            label=label,
            samples=[sample for batch in batches for sample in batch.samples],
            wall_seconds=sum(batch.wall_seconds for batch in batches),
            runner_latency=batches[0].runner_latency,
            upstream_calls=calls,
            cpu_seconds=cpu,
        )

    @property
    def overheads(self) -> list[float]:
        return [sample.end_to_end - self.runner_latency for sample in self.samples]

    def overhead_ms(self, q: float) -> float:
        return percentile(self.overheads, q) * 1000

    @property
    def mean_end_to_end_ms(self) -> float:
        return statistics.fmean(sample.end_to_end for sample in self.samples) * 1000

    @property
    def throughput(self) -> float:
        """Images per second over the wall clock of the whole batch."""
        return len(self.samples) / self.wall_seconds

    def stage_value(self, name: str, q: float = 50) -> float | None:
        """Percentile of a stage in its own unit (seconds, or a count), if recorded."""
        values = [sample.stages[name] for sample in self.samples if name in sample.stages]
        return percentile(values, q) if values else None

    def stage_ms(self, name: str, q: float = 50) -> float | None:
        value = self.stage_value(name, q)
        return None if value is None else value * 1000

    def cpu_ms_per_image(self) -> dict[str, float]:
        count = len(self.samples)
        return {name: seconds * 1000 / count for name, seconds in self.cpu_seconds.items()}

    def upstream_calls_per_image(self) -> dict[str, float]:
        count = len(self.samples)
        return {key: calls / count for key, calls in sorted(self.upstream_calls.items())}


@dataclass(frozen=True)
class Comparison:
    """Platform against floor: how many times worse the platform is (>1 = slower)."""

    platform: RunResult
    floor: RunResult

    def overhead_ratio(self, q: float) -> float:
        return self.platform.overhead_ms(q) / self.floor.overhead_ms(q)

    @property
    def throughput_ratio(self) -> float:
        """Floor throughput / platform throughput."""
        return self.floor.throughput / self.platform.throughput


@dataclass(frozen=True)
class StatementCounts:
    """What the counting processes did during one counting batch (``bench.sqlcount``).

    ``by_role`` maps a process role (``web``, ``worker``) to event counts by kind:
    ``s`` statements, ``c`` of which transaction control, ``w`` write transactions,
    ``n`` new database connections.
    """

    concurrency: int
    images: int
    by_role: dict[str, dict[str, int]]
    #: Per role, the statements that began write transactions (cut short), and how often.
    writes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per role, every statement's shape (``VERB table``), and how often.
    shapes: dict[str, dict[str, int]] = field(default_factory=dict)

    def per_image(self, kind: str, role: str | None = None) -> float:
        """Mean per image of one kind, for one role or all of them."""
        roles = [role] if role is not None else list(self.by_role)
        return sum(self.by_role.get(name, {}).get(kind, 0) for name in roles) / self.images
