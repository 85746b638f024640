"""``python -m bench.drill`` (``make drill``): the fault drill. See ``bench/drill/__init__.py``."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from bench.drill.chaos import Chaos, make_plan
from bench.drill.infra import DrillDatabase, InfraError, OwnPostgres, OwnRedis
from bench.drill.load import Beat, Submitter
from bench.drill.report import render, write_section
from bench.drill.tally import tally
from bench.report import load_average
from bench.stack import BENCH_PASSWORD, REPO_ROOT, Stack, StackError, StackOptions

TEARDOWN_RESERVE = 25.0  # seconds kept for tallying and stopping everything


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drill",
        description=(
            "Submit generations through the JSON API on Postgres + Redis with real Celery"
            " workers and the sandbox while killing workers, restarting Redis and its own"
            " PostgreSQL, dropping Postgres connections and injecting signer/runner faults;"
            " then settle with"
            " reconcile and report what happened to every generation and ticket."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=7, help="fixes the whole fault plan")
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20, help="worker SIGKILLs")
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--postgres-drops", type=int, default=1, help="pg_terminate_backend")
    parser.add_argument(
        "--postgres-restarts", type=int, default=1, help="restarts of the drill's own cluster"
    )
    parser.add_argument("--faults", type=int, default=12, help="sandbox fault injections")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run for development: 30 generations, 3 kills, 1 Redis restart,"
        " 1 Postgres drop, 1 Postgres restart, 4 sandbox faults (explicit flags still win)",
    )
    parser.add_argument(
        "--rate", type=float, default=1.4, help="submissions per second (sets the window)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--runner-latency", type=float, default=1.0)
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down")
    parser.add_argument(
        "--postgres-down", type=float, default=2.0, help="seconds Postgres stays down"
    )
    parser.add_argument("--beat-interval", type=float, default=30.0, help="reconcile task period")
    parser.add_argument(
        "--max-minutes", type=float, default=10.0, help="hard bound on the whole drill"
    )
    parser.add_argument(
        "--postgres-bin",
        type=Path,
        help="directory with initdb and pg_ctl (default: the newest /usr/lib/postgresql/*/bin)",
    )
    parser.add_argument("--write", type=Path, help="(re)write the drill section of this file")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the var dir, the database and the (stopped) cluster",
    )
    raw = list(sys.argv[1:] if argv is None else argv)
    arguments = parser.parse_args(raw)
    if arguments.quick:
        given = {item.split("=", 1)[0] for item in raw if item.startswith("--")}
        for name, value in (
            ("generations", 30),
            ("kills", 3),
            ("redis_restarts", 1),
            ("postgres_drops", 1),
            ("postgres_restarts", 1),
            ("faults", 4),
        ):
            if f"--{name.replace('_', '-')}" not in given:
                setattr(arguments, name, value)
    if arguments.generations < 1 or arguments.rate <= 0 or arguments.workers < 1:
        parser.error("--generations, --rate and --workers must be positive")
    arguments.command = "python -m bench.drill " + shlex.join(raw)
    return arguments


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return completed.stdout.strip()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    hard_deadline = began + arguments.max_minutes * 60
    window = arguments.generations / arguments.rate
    load_before = load_average()
    postgres = OwnPostgres(arguments.postgres_bin)
    database = DrillDatabase(postgres.admin_url, f"pixelhouse_drill_{arguments.seed}_{os.getpid()}")
    options = StackOptions(
        runner_latency=arguments.runner_latency,
        web_workers=arguments.web_workers,
        workers=arguments.workers,
        worker_concurrency=arguments.worker_concurrency,
        keep_var_dir=arguments.keep,
    )
    plan = make_plan(
        seed=arguments.seed,
        window=window,
        workers=arguments.workers,
        kills=arguments.kills,
        redis_restarts=arguments.redis_restarts,
        postgres_drops=arguments.postgres_drops,
        postgres_restarts=arguments.postgres_restarts,
        faults=arguments.faults,
    )
    print(
        f"drill seed {arguments.seed}: {arguments.generations} generations over {window:.0f} s,"
        f" {len(plan)} planned faults; own PostgreSQL ({postgres.bin_dir}) on port"
        f" {postgres.port}, database {database.name}"
    )
    stack: Stack | None = None
    redis_server: OwnRedis | None = None
    from bench.drill import run  # Django is set up once the stack's environment is known

    try:
        postgres.init()
        postgres.start()
        database.create()
        stack = Stack(options)
        redis_server = OwnRedis(stack.var_dir)
        redis_server.start()
        os.environ["DATABASE_URL"] = database.url
        os.environ["REDIS_URL"] = redis_server.url
        print(f"starting sandbox, gunicorn and Celery workers (redis port {redis_server.port}) …")
        stack.start()
        run.use_stack_environment(stack.product_environment())
        workers = [process for process in stack.processes if process.name.startswith("worker-")]
        chaos = Chaos(
            plan=plan,
            seed=arguments.seed,
            stack=stack,
            workers=workers,
            redis_server=redis_server,
            database=database,
            postgres=postgres,
            redis_down_seconds=arguments.redis_down,
            postgres_down_seconds=arguments.postgres_down,
            running_now=lambda: run.running_now(stack.email),
        )
        submitter = Submitter(
            web_url=stack.web_url,
            email=stack.email,
            password=BENCH_PASSWORD,
            count=arguments.generations,
            window=window,
            seed=arguments.seed,
        )
        beat = Beat(run.send_reconcile, arguments.beat_interval)
        watcher = run.DeliveryWatcher(stack.email)
        print(f"stack up after {time.monotonic() - began:.0f} s; submitting and breaking things …")
        t0 = time.monotonic() + 1
        submitter.start(t0)
        chaos.start(t0)
        beat.start()
        watcher.start()
        submitter.join(max(0.0, hard_deadline - TEARDOWN_RESERVE - time.monotonic()))
        chaos.join(max(0.0, t0 + window + 5 - time.monotonic()))
        chaos.stop()
        print(
            f"submissions done after {time.monotonic() - began:.0f} s; settling"
            f" ({len(chaos.records)} faults applied) …"
        )
        steps = run.settle(stack.email, deadline=hard_deadline - TEARDOWN_RESERVE)
        beat.stop()
        steps.append(
            f"beat stand-in sent the reconcile task {beat.sent} times ({beat.failed} failed)"
        )
        watcher.stop()
        steps.append(
            f"delivery watcher: {watcher.samples} samples ({watcher.failed} failed reads),"
            f" {len(watcher.delivered)} generations seen succeeded"
        )
        rows = run.generation_rows(stack.email)
        figures = tally(
            rows=rows,
            events=stack.control.events(),
            payment_requests=stack.control.requests(path="/signer/generate-live-payment"),
            attempts=submitter.attempts,
            abandoned=submitter.abandoned,
            records=chaos.records,
            media_root=run.media_root(),
            delivered=watcher.delivered,
        )
        context = {
            "seed": arguments.seed,
            "generations": arguments.generations,
            "command": arguments.command,
            "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "started": run.now_text(),
            "cpus": os.cpu_count(),
            "load": load_before,
            "wall": time.monotonic() - began,
            "postgres": stack.backends.get("database_version"),
            "postgres_port": postgres.port,
            "database": database.name,
            "redis_version": run.redis_version(redis_server),
            "redis_port": redis_server.port,
            "workers": arguments.workers,
            "worker_concurrency": arguments.worker_concurrency,
            "web_workers": arguments.web_workers,
            "runner_latency": arguments.runner_latency,
            "window": window,
        }
        section = render(
            figures=figures,
            context=context,
            records=chaos.records,
            settle_steps=steps,
            errors=chaos.errors,
        )
        print()
        print(section)
        if arguments.write:
            write_section(arguments.write, section)
            print(f"wrote the drill section of {arguments.write}")
        return 0 if figures.ok else 1
    except (StackError, InfraError) as exc:
        print(f"\nSTACK FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if stack is not None:
            stack.close()
        if redis_server is not None:
            run.cleanup(redis_server, database, keep_database=arguments.keep)
        if arguments.keep:
            postgres.stop()
            print(f"kept the (stopped) PostgreSQL cluster in {postgres.directory}")
        else:
            postgres.remove()
        print(f"drill finished after {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
