"""``python -m bench``: platform overhead of image generation against a direct-call floor.

Example::

    .venv/bin/python -m bench --n 100 --concurrency 1 6 --runner-latency 0.5 \\
        --workers 2 --worker-concurrency 4 --web-workers 4 --write docs/benchmarks.md

Timed batches first (web and workers without any instrumentation), then the stack's web
and workers are restarted with SQL counting (``bench.sqlcount``) for the counting
batches, whose statements and write transactions per image are reported beside the
ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from bench.batch import GenerationFailedError, ImageClient, run_batch
from bench.floor_run import FloorClient, FloorOptions
from bench.markdown import write_markdown
from bench.platform_run import PlatformClient, PlatformOptions, login
from bench.report import ConcurrencyRun, RunContext, load_average, print_table
from bench.sqlcount import counts_between, read_counts, write_statements
from bench.stack import BENCH_PASSWORD, Stack, StackError, StackOptions, cpu_used_between
from bench.stats import Comparison, RunResult, StatementCounts
from tests.sandbox_server import SandboxControl

#: A runner's app (``/apps/{id}/app/``) or its payment session paths, by runner id.
RUNNER_PATH = re.compile(r"^/apps/[^/]+/")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Submit N generations through the JSON API (web tier as deployed: gunicorn with"
            " uvicorn workers, ASGI) with a fixed sandbox runner latency, following each"
            " over its event stream (SSE) until the final event, then make the same upstream"
            " calls directly (the floor); report overhead percentiles, throughput and their"
            " ratios at each concurrency. Then restart web and workers with SQL counting"
            " (a sitecustomize.py first on their PYTHONPATH installs a Django execute"
            " wrapper on every connection; bench/sqlcount.py) and run --count-images more"
            " generations per concurrency: every statement the web and worker processes"
            " execute is counted, and a write transaction is one whose first INSERT, UPDATE,"
            " DELETE or SELECT ... FOR UPDATE ran (an autocommit write is its own). The timed"
            " batches run without the counting."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=60, help="measured generations per side")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 6],
        help="client threads; one timed run (and one counting batch) per value",
    )
    parser.add_argument(
        "--runner-latency", type=float, default=0.5, help="sandbox runner latency (s)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--worker-concurrency", type=int, default=4, help="prefork children per Celery worker"
    )
    parser.add_argument(
        "--web-workers", type=int, default=4, help="gunicorn uvicorn (ASGI) workers"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=argparse.SUPPRESS,
        help="uncounted generations per side before the first round"
        " (default: workers x worker-concurrency, one per worker slot)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="split the N generations into this many alternating platform/floor batches",
    )
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--model", default="ByteDance/SDXL-Lightning")
    parser.add_argument(
        "--broker-polling-interval",
        type=float,
        help="CELERY_BROKER_POLLING_INTERVAL for the stack (filesystem broker only;"
        " default: the setting's default)",
    )
    parser.add_argument(
        "--count-images",
        type=int,
        default=12,
        help="generations per concurrency in the SQL counting batches (0: no counting)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="give up on one generation after (s)"
    )
    parser.add_argument("--write", type=Path, help="(re)write this markdown file's section")
    parser.add_argument("--json", type=Path, help="also dump every sample to this JSON file")
    parser.add_argument(
        "--keep-var-dir", action="store_true", help="keep the temporary var dir and logs"
    )
    arguments = parser.parse_args(argv)
    for name in ("n", "workers", "worker_concurrency", "web_workers", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(arguments.concurrency) < 1:
        parser.error("--concurrency must be at least 1")
    arguments.concurrency = sorted(set(arguments.concurrency))
    if getattr(arguments, "warmup", 0) < 0 or arguments.count_images < 0:
        parser.error("--warmup and --count-images must not be negative")
    if arguments.rounds > arguments.n:
        parser.error("--rounds must not exceed --n")
    if arguments.runner_latency < 0:
        parser.error("--runner-latency must be >= 0")
    if arguments.broker_polling_interval is not None and arguments.broker_polling_interval <= 0:
        parser.error("--broker-polling-interval must be positive")
    return arguments


def upstream_calls(control: SandboxControl) -> dict[str, int]:
    """Requests the sandbox served since the log was last cleared, by route and status."""
    counts: Counter[str] = Counter()
    for entry in control.requests():
        path = RUNNER_PATH.sub("/apps/{id}/", entry["path"])
        counts[f"{entry['method']} {path} -> {entry['status']}"] += 1
    return dict(counts)


def warm_up(client: ImageClient, *, label: str, arguments: argparse.Namespace, count: int) -> None:
    if count:
        print(f"{label}: warm-up, {count} generations (not counted)")
        run_batch(
            client,
            count=count,
            concurrency=min(count, max(arguments.concurrency)),
            runner_latency=arguments.runner_latency,
            label=f"{label}-warmup",
            first_index=1_000_000,
        )


def measure(
    client: ImageClient,
    stack: Stack,
    *,
    label: str,
    arguments: argparse.Namespace,
    concurrency: int,
    count: int,
    first_index: int,
) -> RunResult:
    """One measured batch, with the upstream calls and CPU time it caused."""
    stack.control.clear_requests()
    print(f"{label}: {count} generations, concurrency {concurrency}")
    cpu_before = stack.cpu_snapshot()
    result = run_batch(
        client,
        count=count,
        concurrency=concurrency,
        runner_latency=arguments.runner_latency,
        label=label,
        first_index=first_index,
    )
    return RunResult(
        label=result.label,
        samples=result.samples,
        wall_seconds=result.wall_seconds,
        runner_latency=result.runner_latency,
        upstream_calls=upstream_calls(stack.control),
        cpu_seconds=cpu_used_between(cpu_before, stack.cpu_snapshot()),
    )


def round_sizes(total: int, rounds: int) -> list[int]:
    """``total`` split into ``rounds`` batches that differ by at most one."""
    return [total // rounds + (1 if index < total % rounds else 0) for index in range(rounds)]


def platform_options(stack: Stack, arguments: argparse.Namespace) -> PlatformOptions:
    return PlatformOptions(
        web_url=stack.web_url,
        email=stack.email,
        password=BENCH_PASSWORD,
        width=arguments.width,
        height=arguments.height,
        model_id=arguments.model,
        timeout=arguments.timeout,
    )


def run_both(stack: Stack, arguments: argparse.Namespace, warmup: int) -> list[ConcurrencyRun]:
    """Platform and floor batches, alternating, on the same sandbox, per concurrency.

    Alternating rounds (platform, floor, platform, floor, …) expose both sides to the
    same background noise on a shared machine; the samples of each side are pooled.
    """
    options = platform_options(stack, arguments)
    clients: dict[str, ImageClient] = {
        "platform": PlatformClient(options, login(options)),
        "floor": FloorClient(
            FloorOptions(
                pymthouse_url=stack.sandbox_url,
                m2m_client_id=stack.credentials.m2m_client_id,
                m2m_client_secret=stack.credentials.m2m_client_secret,
                external_user_id=stack.external_user_id,
                model_id=arguments.model,
                width=arguments.width,
                height=arguments.height,
            )
        ),
    }
    for label, client in clients.items():
        warm_up(client, label=label, arguments=arguments, count=warmup)
    runs: list[ConcurrencyRun] = []
    first_index = 0
    sizes = round_sizes(arguments.n, arguments.rounds)
    for concurrency in arguments.concurrency:
        load_before = load_average()
        batches: dict[str, list[RunResult]] = {label: [] for label in clients}
        for round_number, count in enumerate(sizes, start=1):
            for label, client in clients.items():
                batches[label].append(
                    measure(
                        client,
                        stack,
                        label=f"{label} c{concurrency} (round {round_number}/{len(sizes)})",
                        arguments=arguments,
                        concurrency=concurrency,
                        count=count,
                        first_index=first_index,
                    )
                )
            first_index += count
        runs.append(
            ConcurrencyRun(
                concurrency=concurrency,
                comparison=Comparison(
                    platform=RunResult.pooled("platform", batches["platform"]),
                    floor=RunResult.pooled("floor", batches["floor"]),
                ),
                load_before=load_before,
                load_after=load_average(),
            )
        )
    return runs


#: After a counting batch, how long to wait for the worker's last after-commit work.
SETTLE_SECONDS = 1.5


def _grown(
    before: dict[str, Counter[str]], after: dict[str, Counter[str]]
) -> dict[str, dict[str, int]]:
    """Per role, what was added to each count between two reads."""
    return {
        role: {
            key: count - before.get(role, Counter())[key]
            for key, count in sorted(counts.items())
            if count > before.get(role, Counter())[key]
        }
        for role, counts in after.items()
    }


def count_statements(
    stack: Stack, arguments: argparse.Namespace, warmup: int
) -> list[StatementCounts]:
    """Restart web and workers with SQL counting and count a batch per concurrency."""
    if not arguments.count_images:
        return []
    print("restarting web and workers with SQL counting …")
    count_dir = stack.restart_counting()
    options = platform_options(stack, arguments)
    client = PlatformClient(options, login(options))
    # Every worker slot warm (its connection, the discovery cache, the signer info).
    warm_up(client, label="counting", arguments=arguments, count=warmup)
    results: list[StatementCounts] = []
    for concurrency in arguments.concurrency:
        time.sleep(SETTLE_SECONDS)
        before = read_counts(count_dir)
        writes_before = write_statements(count_dir)
        shapes_before = write_statements(count_dir, ".shape")
        print(f"counting: {arguments.count_images} generations, concurrency {concurrency}")
        run_batch(
            client,
            count=arguments.count_images,
            concurrency=concurrency,
            runner_latency=arguments.runner_latency,
            label=f"counting-c{concurrency}",
            first_index=2_000_000 + concurrency * 10_000,
        )
        time.sleep(SETTLE_SECONDS)
        results.append(
            StatementCounts(
                concurrency=concurrency,
                images=arguments.count_images,
                by_role=counts_between(before, read_counts(count_dir)),
                writes=_grown(writes_before, write_statements(count_dir)),
                shapes=_grown(shapes_before, write_statements(count_dir, ".shape")),
            )
        )
    return results


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the stack's cleanup


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _terminate)
    warmup: int = getattr(arguments, "warmup", arguments.workers * arguments.worker_concurrency)
    options = StackOptions(
        runner_latency=arguments.runner_latency,
        web_workers=arguments.web_workers,
        workers=arguments.workers,
        worker_concurrency=arguments.worker_concurrency,
        keep_var_dir=arguments.keep_var_dir,
        broker_polling_interval=arguments.broker_polling_interval,
    )
    load_before = load_average()
    print("starting sandbox, database, gunicorn (uvicorn workers) and Celery workers …")
    try:
        with Stack(options) as stack:
            print(
                f"stack up: web {stack.web_url}, sandbox {stack.sandbox_url},"
                f" var dir {stack.var_dir}, backends {stack.backends}"
            )
            try:
                runs = run_both(stack, arguments, warmup)
                statements = count_statements(stack, arguments, warmup)
            except GenerationFailedError:
                print(stack.log_tails(), file=sys.stderr)
                for name in stack.exited_processes():
                    print(f"\n{name} exited during the run; see its log", file=sys.stderr)
                stack.keep_var_dir = True
                raise
            backends = stack.backends
    except GenerationFailedError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"\nSTACK FAILED: {exc}", file=sys.stderr)
        return 2

    context = RunContext(
        arguments=vars(arguments), backends=backends, warmup=warmup, load_before=load_before
    )
    print_table(runs, statements, context)
    if arguments.write:
        write_markdown(arguments.write, runs, statements, context)
        print(f"wrote section {context.section_key!r} of {arguments.write}")
    if arguments.json:
        arguments.json.write_text(
            json.dumps(
                {
                    "arguments": {key: str(value) for key, value in vars(arguments).items()},
                    "backends": backends,
                    "runs": [
                        {
                            "concurrency": run.concurrency,
                            "load_before": run.load_before,
                            "load_after": run.load_after,
                            "platform": asdict(run.comparison.platform),
                            "floor": asdict(run.comparison.floor),
                        }
                        for run in runs
                    ],
                    "statements": [asdict(count) for count in statements],
                },
                indent=2,
            )
        )
        print(f"wrote samples to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
