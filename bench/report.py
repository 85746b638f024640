"""The console table and ``docs/benchmarks.md``.

The document has a fixed preamble and one section per backend combination (embedded
SQLite + filesystem broker, or PostgreSQL + Redis, …). ``--write`` regenerates the
preamble and replaces only the section of the backends it ran on, so runs on different
backends accumulate in one file.
"""

from __future__ import annotations

import os
import platform as platform_module
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.stats import PERCENTILES, Comparison, RunResult

REPO_ROOT = Path(__file__).resolve().parent.parent

PLATFORM_STAGES = (
    ("submit", "`POST /api/v1/generations` round trip (validate, rate-limit, INSERT, enqueue)"),
    ("queue_wait", "server `created_at` → `started_at`: broker hand-off until a worker starts"),
    ("worker_overhead", "server `started_at` → `finished_at` minus runner latency"),
    ("server_overhead", "server `created_at` → `finished_at` minus runner latency"),
    ("client_visible_extra", "client end to end minus server `created_at` → `finished_at`"),
    ("poll_round_trip", "one poll `GET /api/v1/generations/{id}` round trip (mean per generation)"),
)
CPU_COMPONENTS = (
    ("sandbox", "sandbox (pymthouse + signer + runners)"),
    ("web", "gunicorn (all workers)"),
    ("worker", "Celery (all workers and pool children)"),
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


def _git_revision() -> str:
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
            ["git", "status", "--porcelain", "--untracked-files=no"],
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


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _count(result: RunResult, name: str, q: float) -> str:
    value = result.stage_value(name, q)
    return "n/a" if value is None else f"{value:.0f}"


def _stage(result: RunResult, name: str, q: float) -> float | None:
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
            _ms(platform.overhead_ms(q)),
            _ms(floor.overhead_ms(q)),
            f"{comparison.overhead_ratio(q):.2f}x",
        )
        for q in PERCENTILES
    ]
    rows.append(
        (
            "mean end to end (ms)",
            _ms(platform.mean_end_to_end_ms),
            _ms(floor.mean_end_to_end_ms),
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


def _markdown_table(
    header: Iterable[str], rows: Iterable[Iterable[str]], *, numeric: bool = True
) -> str:
    """A GitHub table; with ``numeric`` every column but the first is right-aligned."""
    header = list(header)
    align = " ---: " if numeric else " --- "
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " if i == 0 else align for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- console ------------------------------------------------------------------------


def print_table(comparison: Comparison, context: RunContext) -> None:
    rows = [("", "platform", "floor", "platform/floor"), *results_rows(comparison)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    print(f"image generation, {context.section_title}")
    for row in rows:
        print(
            "  "
            + row[0].ljust(widths[0])
            + "  "
            + "  ".join(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        )
    print()
    for label, result, stages in (
        ("platform", comparison.platform, PLATFORM_STAGES),
        ("floor", comparison.floor, FLOOR_STAGES),
    ):
        parts = [f"{name} {_ms(_stage(result, name, 50))}" for name, _ in stages]
        print(f"  {label} stage medians (ms): " + ", ".join(parts))
        cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in result.cpu_ms_per_image().items())
        print(f"  {label} CPU ms per image: {cpu}")
    print()


# --- markdown -----------------------------------------------------------------------

PREAMBLE = """\
# Benchmarks

Generated by `python -m bench` (`bench/`); do not edit by hand. Each section below is
rewritten by a run on its backends; the text between sections is regenerated too.

## Image generation: platform overhead against a direct-call floor

**What is measured.** The sandbox (`sandbox/`, standing in for pymthouse and the Livepeer
signer/runners) runs with a fixed runner latency (`SANDBOX_RUNNER_LATENCY_SECONDS`), so
everything above that latency is overhead. In the same run, on the same sandbox, with the
same N and concurrency:

- **platform**: an isolated stack (temporary `PIXELHOUSE_VAR_DIR`, free loopback ports,
  `migrate`, `createcachetable`, a fresh user) with gunicorn and Celery prefork workers.
  A client logs in through the allauth form, submits N generations through
  `POST /api/v1/generations` from a pool of `concurrency` threads (closed loop: each
  thread submits its next generation when the previous one finished) and polls
  `GET /api/v1/generations/{id}` until `succeeded`. End to end is client-side, monotonic,
  from just before the POST to the poll response that saw `succeeded`.
- **floor** (`bench/floor_run.py`): plain `requests`, no Django, making exactly the
  upstream calls the worker makes per image: mint a signer session at pymthouse
  (`POST /api/v1/oidc/token`), `GET` discovery, `sign-orchestrator-info` (cached per
  signer, as the platform does), the runner's 402 challenge, `generate-live-payment`
  (unique `gatewayRequestId`), the paid runner call, and decoding the image. One
  keep-alive session per thread.

**overhead = end to end − runner latency**, reported as p50/p95/p99 (linear
interpolation). Throughput is images per second over the wall clock of the batches.
Ratios are platform/floor for overhead (how many times the floor's overhead the platform
adds) and floor/platform for throughput. A warm-up batch (one generation per worker slot)
runs first for both and is not counted. The N measured generations per side run in
alternating rounds (platform, floor, platform, floor, …) so both sides see the same
background load, and each side's samples are pooled. The "upstream calls per image"
tables come from the sandbox's request log and show that both runs make the same calls.

Both runs share the machine with everything else in the run (the sandbox, the bench
client, and for the platform gunicorn and the Celery workers), so on a small machine the
platform's own processes compete for the same cores the upstream calls need; that is part
of what the platform costs.

**Reproduce** (from the repository root; PostgreSQL and Redis via the usual variables):

```sh
.venv/bin/python -m bench --write docs/benchmarks.md
DATABASE_URL=postgres://postgres@127.0.0.1:5432/pixelhouse_bench \\
  REDIS_URL=redis://127.0.0.1:6379/2 .venv/bin/python -m bench --write docs/benchmarks.md
```

The database in `DATABASE_URL` must exist (`createdb -h 127.0.0.1 -U postgres
pixelhouse_bench`); the bench migrates it and adds a fresh user per run. Options:
`python -m bench --help`.

**Where the platform's overhead comes from (read from the code).** Per generation:

- *Submit*: the API request validates, applies the per-user rate limit (a `cache.add` and
  `cache.incr`, which on the embedded database cache are SQL statements) and an
  active-job `COUNT`, INSERTs the row and publishes the Celery message after commit.
- *Broker hand-off*: the embedded filesystem broker is polled: an idle worker looks at the
  queue directory every `polling_interval` (0.25 s, `config/settings.py`), so a message
  waits up to 0.25 s (about half of that on average) before any worker sees it. Redis
  delivers on a blocking pop, without that wait.
- *Worker*: `_generation_start` (`SELECT … FOR UPDATE` + UPDATE), then separate UPDATEs for
  the backend, stage `connecting`, the payment claim, the payment confirm and stage
  `saving`, the final UPDATE and a `refresh_from_db`: about seven writes, each its own
  transaction (on SQLite each takes the single database write lock). The pymthouse client
  reads the OIDC discovery document from the Django cache for every mint (a SQL query on the
  embedded database cache). The Livepeer client opens a new `requests` session per
  generation, so every image starts with a fresh TCP connection. The image is written to
  media storage.
- *Client-visible*: the client learns of completion by polling, so on average half a poll
  interval plus one poll round trip is added; every poll is a web request with a session
  lookup and a SELECT.
"""


def section_markdown(comparison: Comparison, context: RunContext) -> str:
    platform, floor = comparison.platform, comparison.floor
    arguments = context.arguments
    lines = [
        f"### {context.section_title}",
        "",
        f"Run {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC at commit {_git_revision()}.",
        "",
        "```sh",
        command_line(),
        "```",
        "",
        _markdown_table(
            ("machine and backends", ""),
            [*machine_facts(context.load_before), *backend_facts(context.backends)],
            numeric=False,
        ),
        "",
        _markdown_table(
            ("parameter", "value"),
            [
                (
                    "measured generations per side (N)",
                    f"{arguments['n']}, in {arguments['rounds']} alternating rounds",
                ),
                ("client concurrency", str(arguments["concurrency"])),
                ("warm-up generations (not counted)", str(context.warmup)),
                ("runner latency", f"{arguments['runner_latency']} s"),
                ("image", f"{arguments['width']}x{arguments['height']}, {arguments['model']}"),
                ("client poll interval", f"{arguments['poll_interval'] * 1000:.0f} ms"),
                ("gunicorn workers (sync)", str(arguments["web_workers"])),
                (
                    "Celery workers x prefork concurrency",
                    f"{arguments['workers']} x {arguments['worker_concurrency']}",
                ),
                ("Django", "DEBUG on (the embedded development settings)"),
            ],
            numeric=False,
        ),
        "",
        "**Results**",
        "",
        _markdown_table(("", "platform", "floor", "platform/floor"), results_rows(comparison)),
        "",
        f"**Ratios**: platform overhead is {comparison.overhead_ratio(50):.2f}x the floor's at"
        f" p50, {comparison.overhead_ratio(95):.2f}x at p95 and"
        f" {comparison.overhead_ratio(99):.2f}x at p99; the floor's throughput is"
        f" {comparison.throughput_ratio:.2f}x the platform's.",
        "",
        "**Where the time goes** (p50 / p95 in ms)",
        "",
        _markdown_table(
            ("platform stage", "p50", "p95"),
            [
                (description, _ms(_stage(platform, name, 50)), _ms(_stage(platform, name, 95)))
                for name, description in PLATFORM_STAGES
            ]
            + [
                (
                    "polls per generation",
                    _count(platform, "polls", 50),
                    _count(platform, "polls", 95),
                )
            ],
        ),
        "",
        _markdown_table(
            ("floor step", "p50", "p95"),
            [
                (description, _ms(_stage(floor, name, 50)), _ms(_stage(floor, name, 95)))
                for name, description in FLOOR_STAGES
            ],
        ),
        "",
        _interpretation(comparison, context),
        "",
        "CPU time per image, by process, during the measured batch (the stack stays up,"
        " idle, during the floor run):",
        "",
        _cpu_table(platform, floor),
        "",
        "Upstream calls per image (sandbox request log, measured batch only):",
        "",
        _calls_table(platform, floor),
    ]
    return "\n".join(lines)


def _interpretation(comparison: Comparison, context: RunContext) -> str:
    platform, floor = comparison.platform, comparison.floor
    overhead = platform.overhead_ms(50)
    queue = _stage(platform, "queue_wait", 50)
    worker = _stage(platform, "worker_overhead", 50)
    client = _stage(platform, "client_visible_extra", 50)
    floor_overhead = floor.overhead_ms(50)
    if queue is None or worker is None or client is None:
        return ""
    broker = context.backends["broker"]
    interval = context.backends.get("broker_polling_interval")
    broker_note = (
        f"the filesystem broker is polled every {interval} s" if interval else f"{broker} broker"
    )
    return (
        f"**Reading it.** Of the platform's median overhead of {overhead:.0f} ms (the floor"
        f" needs {floor_overhead:.0f} ms for the same upstream calls), about {queue:.0f} ms is"
        f" the broker hand-off ({broker_note}), {worker:.0f} ms is the worker"
        f" (the upstream calls, which the floor shows cost about {floor_overhead:.0f} ms, plus"
        f" the database writes, the cache read for discovery, a new connection per generation"
        f" and saving the image), and {client:.0f} ms is what only the client sees (the submit"
        f" round trip before the row exists, plus polling every"
        f" {context.arguments['poll_interval'] * 1000:.0f} ms). Medians do not add up exactly."
    )


def _calls_table(platform: RunResult, floor: RunResult) -> str:
    platform_calls = platform.upstream_calls_per_image()
    floor_calls = floor.upstream_calls_per_image()
    keys = sorted(set(platform_calls) | set(floor_calls))
    return _markdown_table(
        ("upstream call", "platform", "floor"),
        [
            (f"`{key}`", f"{platform_calls.get(key, 0):.2f}", f"{floor_calls.get(key, 0):.2f}")
            for key in keys
        ],
    )


def _cpu_table(platform: RunResult, floor: RunResult) -> str:
    platform_cpu = platform.cpu_ms_per_image()
    floor_cpu = floor.cpu_ms_per_image()
    rows = [
        (description, _ms(platform_cpu.get(name)), _ms(floor_cpu.get(name)))
        for name, description in CPU_COMPONENTS
        if name in platform_cpu or name in floor_cpu
    ]
    rows.append(
        (
            "**total**",
            _ms(sum(platform_cpu.values())),
            _ms(sum(floor_cpu.values())),
        )
    )
    return _markdown_table(("CPU ms per image (user + system)", "platform", "floor"), rows)


def _section_markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:begin {key} -->", f"<!-- bench:end {key} -->"


def write_markdown(path: Path, comparison: Comparison, context: RunContext) -> None:
    """Regenerate the preamble and this backend's section; keep the other sections."""
    sections: dict[str, str] = {}
    if path.exists():
        pattern = re.compile(
            r"<!-- bench:begin (?P<key>[\w-]+) -->\n(?P<body>.*?)\n<!-- bench:end (?P=key) -->",
            re.DOTALL,
        )
        for match in pattern.finditer(path.read_text()):
            sections[match["key"]] = match["body"]
    sections[context.section_key] = section_markdown(comparison, context)
    # Embedded defaults first, then the rest alphabetically.
    order = sorted(sections, key=lambda key: (key != "sqlite-filesystem", key))
    parts = [PREAMBLE]
    for key in order:
        begin, end = _section_markers(key)
        parts.append(f"{begin}\n{sections[key]}\n{end}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
