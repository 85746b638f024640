"""What a run reports: machine and backend facts, the results rows, the console table.

``bench.markdown`` turns the same pieces into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import platform as platform_module
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.stats import PERCENTILES, Comparison, RunResult, StatementCounts

REPO_ROOT = Path(__file__).resolve().parent.parent

PLATFORM_STAGES = (
    ("submit", "`POST /api/v1/generations` round trip (validate, admit, enqueue)"),
    ("stream_first_event", "POST answered → first event of `GET …/{id}/events` read"),
    ("queue_wait", "server `created_at` → `started_at`: broker hand-off until a worker starts"),
    ("worker_overhead", "server `started_at` → `finished_at` minus runner latency"),
    ("server_overhead", "server `created_at` → `finished_at` minus runner latency"),
    ("push_delay", "server `finished_at` → final event read by the client (wall clocks)"),
    ("client_visible_extra", "client end to end minus server `created_at` → `finished_at`"),
)
CPU_COMPONENTS = (
    ("sandbox", "sandbox (pymthouse + signer + runners)"),
    ("web", "web: gunicorn + uvicorn workers (all)"),
    ("worker", "Celery (all workers and pool children)"),
    (
        "postgres",
        "PostgreSQL backends of the bench database (those alive at both snapshots: the web's"
        " pools and the workers' kept connections; one that came and went is missed)",
    ),
    ("redis", "Redis server (the whole process, shared with anything else using it)"),
    ("bench client", "bench client (this process)"),
)
FLOOR_STAGES = (
    ("mint", "mint signer session (`POST /api/v1/oidc/token`)"),
    ("discover", "`GET {discovery_url}`"),
    ("signer_info", "`sign-orchestrator-info` (cached per signer, as in the platform)"),
    ("challenge", "unpaid runner call → 402"),
    ("payment", "`generate-live-payment`"),
    ("paid_call_overhead", "paid runner call minus runner latency"),
    ("decode", "decode the data URL"),
)


@dataclass(frozen=True)
class ConcurrencyRun:
    """The timed platform and floor batches at one client concurrency."""

    concurrency: int
    comparison: Comparison
    load_before: str
    load_after: str


@dataclass(frozen=True)
class RunContext:
    """Everything about a run that is not a measurement."""

    arguments: dict[str, Any]
    backends: dict[str, Any]
    warmup: int
    load_before: str

    @property
    def section_key(self) -> str:
        return f"{self.backends['database_vendor']}-{self.backends['broker']}"

    @property
    def section_title(self) -> str:
        database = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(
            self.backends["database_vendor"], self.backends["database_vendor"]
        )
        broker = {"filesystem": "filesystem broker", "redis": "Redis broker"}.get(
            self.backends["broker"], f"{self.backends['broker']} broker"
        )
        embedded = database == "SQLite" and self.backends["broker"] == "filesystem"
        suffix = " (embedded defaults)" if embedded else ""
        return f"{database} + {broker} + {self.backends['cache_backend']}{suffix}"


# --- helpers ------------------------------------------------------------------------


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def command_line() -> str:
    """The command that reproduces this run (connection URLs redacted of passwords)."""
    prefix = [
        f"{name}={_redacted(os.environ[name])}"
        for name in ("DATABASE_URL", "REDIS_URL")
        if os.environ.get(name)
    ]
    return " ".join([*prefix, ".venv/bin/python", "-m", "bench", *map(shlex.quote, sys.argv[1:])])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform_module.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """Read-only: the commit the code ran from, marked dirty if the tree has changes."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # The generated results file itself is not code: a second backend's run
            # after the first one wrote its section is still a clean tree.
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)docs/benchmarks.md",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision} (with uncommitted changes)" if dirty else revision


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_facts(load_before: str) -> list[tuple[str, str]]:
    return [
        ("CPUs (nproc)", str(len(os.sched_getaffinity(0)))),
        ("CPU", _cpu_model()),
        ("memory", _memory()),
        ("OS", platform_module.platform()),
        ("Python", platform_module.python_version()),
        ("load average before the run (1/5/15 min)", load_before),
        ("load average after the run", load_average()),
        (
            "packages",
            ", ".join(
                f"{name} {_version(name)}"
                for name in ("Django", "gunicorn", "celery", "kombu", "requests", "uvicorn")
            ),
        ),
    ]


def backend_facts(backends: dict[str, Any]) -> list[tuple[str, str]]:
    database = f"{backends['database_vendor']} {backends['database_version']}"
    facts = [("database", f"{database} ({backends['database_location']})")]
    facts.append(("cache", backends["cache_backend"]))
    broker = backends["broker"]
    if backends.get("broker_polling_interval") is not None:
        broker += f" (polling interval {backends['broker_polling_interval']} s)"
    facts.append(("Celery broker", broker))
    if backends.get("redis_version"):
        facts.append(("Redis", f"{backends['redis_version']} (db {backends['redis_db']})"))
    return facts


def milliseconds_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def count_text(result: RunResult, name: str, q: float) -> str:
    value = result.stage_value(name, q)
    return "n/a" if value is None else f"{value:.0f}"


def stage_ms(result: RunResult, name: str, q: float) -> float | None:
    """A stage percentile in ms; derived stages subtract the runner latency."""
    latency = result.runner_latency
    derived = {
        "worker_overhead": ("worker_run", latency),
        "server_overhead": ("server_total", latency),
        "paid_call_overhead": ("paid_call", latency),
    }
    source, minus = derived.get(name, (name, 0.0))
    value = result.stage_ms(source, q)
    return None if value is None else value - minus * 1000


def results_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    platform, floor = comparison.platform, comparison.floor
    rows = [
        (
            f"overhead p{q} (ms)",
            milliseconds_text(platform.overhead_ms(q)),
            milliseconds_text(floor.overhead_ms(q)),
            f"{comparison.overhead_ratio(q):.2f}x",
        )
        for q in PERCENTILES
    ]
    rows.append(
        (
            "mean end to end (ms)",
            milliseconds_text(platform.mean_end_to_end_ms),
            milliseconds_text(floor.mean_end_to_end_ms),
            f"{platform.mean_end_to_end_ms / floor.mean_end_to_end_ms:.2f}x",
        )
    )
    rows.append(
        (
            "throughput (images/s)",
            f"{platform.throughput:.2f}",
            f"{floor.throughput:.2f}",
            f"{comparison.throughput_ratio:.2f}x (floor/platform)",
        )
    )
    rows.append(
        (
            "batch wall clock (s)",
            f"{platform.wall_seconds:.2f}",
            f"{floor.wall_seconds:.2f}",
            "",
        )
    )
    return rows


# --- console ------------------------------------------------------------------------


def statements_rows(counts: list[StatementCounts]) -> list[tuple[str, ...]]:
    """Per concurrency: statements, transaction control, write transactions and new
    connections per image (mean over the counting batch), web + worker."""

    def split(count: StatementCounts, kind: str) -> str:
        total = count.per_image(kind)
        return (
            f"{total:.1f} ({count.per_image(kind, 'web'):.1f} + "
            f"{count.per_image(kind, 'worker'):.1f})"
        )

    return [
        (
            str(count.concurrency),
            split(count, "s"),
            split(count, "c"),
            split(count, "w"),
            split(count, "n"),
            str(count.images),
        )
        for count in counts
    ]


STATEMENTS_HEADER = (
    "concurrency",
    "SQL statements per image (web + worker)",
    "of which BEGIN / SAVEPOINT / RELEASE",
    "write transactions per image (web + worker)",
    "Django DB connections opened per image (web + worker; on PostgreSQL the web's are pool loans)",
    "images counted",
)


def print_table(
    runs: list[ConcurrencyRun], statements: list[StatementCounts], context: RunContext
) -> None:
    print()
    print(f"image generation, {context.section_title}")
    for run in runs:
        comparison = run.comparison
        rows = [("", "platform", "floor", "platform/floor"), *results_rows(comparison)]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        print(f"\nconcurrency {run.concurrency} (load {run.load_before} → {run.load_after})")
        for row in rows:
            print(
                "  "
                + row[0].ljust(widths[0])
                + "  "
                + "  ".join(
                    cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
                )
            )
        for label, result, stages in (
            ("platform", comparison.platform, PLATFORM_STAGES),
            ("floor", comparison.floor, FLOOR_STAGES),
        ):
            parts = [
                f"{name} {milliseconds_text(stage_ms(result, name, 50))}" for name, _ in stages
            ]
            print(f"  {label} stage medians (ms): " + ", ".join(parts))
            cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in result.cpu_ms_per_image().items())
            print(f"  {label} CPU ms per image: {cpu}")
    if statements:
        print("\ncounted per image (separate counting batch):")
        for row in statements_rows(statements):
            print(
                "  " + "; ".join(f"{h}: {v}" for h, v in zip(STATEMENTS_HEADER, row, strict=True))
            )
    print()
