"""An isolated pixelhouse stack for one benchmark run.

A temporary ``PIXELHOUSE_VAR_DIR`` (SQLite file, filesystem broker, media), free loopback
ports, the sandbox with a fixed runner latency, ``migrate`` + ``createcachetable``, one
fresh bench user, then the web tier as deployed (gunicorn with uvicorn workers serving
``config.asgi``, README "Deploying on several machines") and Celery workers.
``DATABASE_URL`` / ``REDIS_URL`` from the caller's environment are passed through
(Postgres / Redis); everything else that could point the processes elsewhere is dropped.

Every child runs in its own process group and is stopped by its pid in ``close()``.
:meth:`Stack.restart_counting` restarts web and workers with SQL counting
(``bench.sqlcount``) for the counting batches; the timed batches run before, without it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests  # noqa: TID251 -- the benchmark is an outside HTTP client of the stack

from bench import sqlcount
from sandbox.config import (
    DEFAULT_M2M_CLIENT_ID,
    DEFAULT_M2M_CLIENT_SECRET,
    DEFAULT_PUBLIC_CLIENT_ID,
)
from tests.sandbox_server import SandboxControl, free_port

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_PASSWORD = "pixelhouse-bench-password"
#: Far more than any run spends (one image costs 14 306 micros at the sandbox's fixed price).
BENCH_BALANCE_USD_MICROS = 10**12
#: Inherited variables dropped from every child: they could point the stack at a real
#: pymthouse, change limits, or make tasks eager. DATABASE_URL / REDIS_URL pass through.
DROPPED_PREFIXES = (
    "DJANGO_",
    "PYMTHOUSE_",
    "LIVEPEER_",
    "INFERENCE_",
    "SANDBOX_",
    "CELERY_",
    "PIXELHOUSE_",
    "TASK_RETRY_",
    "ACCOUNT_",
    "DATABASE_CONN_",
)


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackOptions:
    runner_latency: float
    web_workers: int
    workers: int
    worker_concurrency: int
    keep_var_dir: bool = False
    #: ``CELERY_BROKER_POLLING_INTERVAL`` for the stack (the filesystem broker only);
    #: None keeps the setting's default.
    broker_polling_interval: float | None = None


@dataclass(frozen=True)
class Credentials:
    """The sandbox's demo app (its defaults match Django's DEBUG defaults)."""

    public_client_id: str = DEFAULT_PUBLIC_CLIENT_ID
    m2m_client_id: str = DEFAULT_M2M_CLIENT_ID
    m2m_client_secret: str = DEFAULT_M2M_CLIENT_SECRET


def _base_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(DROPPED_PREFIXES) and key != "DJANGO_SETTINGS_MODULE"
    }


class ManagedProcess:
    """A child in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the leader (gunicorn and Celery then stop their own children
        gracefully), SIGKILL the group if it lingers, and always sweep the group so no
        pool child outlives its leader."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            self._signal_group(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None

    @staticmethod
    def _signal_group(pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class Stack:
    """Sandbox + web + workers on loopback; use as a context manager."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        #: Set when a run fails, so the process logs survive for inspection.
        self.keep_var_dir = options.keep_var_dir
        self.credentials = Credentials()
        self.var_dir = Path(tempfile.mkdtemp(prefix="pixelhouse-bench-"))
        self.sandbox_port = free_port()
        self.web_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        suffix = uuid.uuid4().hex[:12]
        # A fresh user per run, so a reused Postgres database or Redis never mixes runs.
        self.email = f"bench-{suffix}@example.com"
        self.external_user_id = f"bench-{suffix}"
        self.control = SandboxControl(self.sandbox_url)
        self.processes: list[ManagedProcess] = []
        self.backends: dict[str, Any] = {}
        #: Set by :meth:`restart_counting`: where the counting processes write.
        self.count_dir: Path | None = None

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._start_sandbox()
        self._prepare_database()
        self._start_web()
        self._start_workers()
        self.control.set_balance(self.external_user_id, BENCH_BALANCE_USD_MICROS)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.keep_var_dir:
            print(f"kept {self.var_dir}")
        else:
            shutil.rmtree(self.var_dir, ignore_errors=True)

    # --- environment -----------------------------------------------------------------

    def product_environment(self) -> dict[str, str]:
        env = _base_environment()
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DJANGO_DEBUG": "true",
                "PIXELHOUSE_VAR_DIR": str(self.var_dir),
                "PYMTHOUSE_URL": self.sandbox_url,
                "LIVEPEER_GATEWAY_URL": self.sandbox_url,
                # The sandbox is on loopback, which production settings refuse.
                "LIVEPEER_ALLOW_PRIVATE_ADDRESSES": "true",
                "INFERENCE_BACKEND": "live-runner",
                "INFERENCE_RATE_LIMIT_COUNT": "1000000",
                "INFERENCE_MAX_ACTIVE_PER_USER": "1000000",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.options.broker_polling_interval is not None:
            env["CELERY_BROKER_POLLING_INTERVAL"] = str(self.options.broker_polling_interval)
        return env

    def _start_sandbox(self) -> None:
        env = _base_environment()
        env.update(
            {
                "SANDBOX_RUNNER_LATENCY_SECONDS": str(self.options.runner_latency),
                "SANDBOX_DEFAULT_BALANCE_USD_MICROS": str(BENCH_BALANCE_USD_MICROS),
                "SANDBOX_LOG_LEVEL": "warning",
            }
        )
        sandbox = ManagedProcess(
            "sandbox",
            [
                sys.executable,
                "-m",
                "sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sandbox_port),
            ],
            env=env,
            log_path=self.var_dir / "sandbox.log",
        )
        self.processes.append(sandbox)
        sandbox.start()
        _wait_until_ok(sandbox, f"{self.sandbox_url}/api/v1/health", timeout=30)
        config = self.control.config()
        if float(config["runnerLatencySeconds"]) != self.options.runner_latency:
            raise StackError(f"sandbox runner latency is {config['runnerLatencySeconds']}")

    def manage(self, *args: str, timeout: float = 300) -> str:
        """``manage.py <args>``; returns stdout, raises with the output on failure."""
        completed = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=self.product_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise StackError(
                f"manage.py {' '.join(args[:1])} failed ({completed.returncode}):\n"
                f"{completed.stdout}\n{completed.stderr}"
            )
        return completed.stdout

    def _prepare_database(self) -> None:
        self.manage("migrate", "--noinput")
        self.manage("createcachetable")
        output = self.manage(
            "shell",
            "-c",
            _SETUP_SCRIPT
            % {
                "email": json.dumps(self.email),
                "password": json.dumps(BENCH_PASSWORD),
                "external_user_id": json.dumps(self.external_user_id),
            },
        )
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if not lines:
            raise StackError(f"bench user setup printed no backend info:\n{output}")
        self.backends = json.loads(lines[-1])

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        env = self.product_environment()
        if self.count_dir is not None:
            site = self.count_dir / "site"
            env["PYTHONPATH"] = os.pathsep.join(
                [str(site), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
            )
            env[sqlcount.DIR_VARIABLE] = str(self.count_dir)
            env[sqlcount.ROLE_VARIABLE] = name.split("-", 1)[0]
        suffix = "-counting" if self.count_dir is not None else ""
        process = ManagedProcess(name, argv, env=env, log_path=self.var_dir / f"{name}{suffix}.log")
        self.processes.append(process)
        process.start()
        return process

    def _start_web(self) -> None:
        # As deployed (README, "Deploying on several machines"): config/asgi.py sets
        # PIXELHOUSE_ASGI, so every request closes its database connection.
        web = self._spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.asgi:application",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                str(self.options.web_workers),
                "--timeout",
                "30",
                "--keep-alive",
                "5",
            ],
        )
        _wait_until_ok(web, f"{self.web_url}/accounts/login/", timeout=60)

    def restart_counting(self) -> Path:
        """Restart web and workers with SQL counting on (``bench.sqlcount``); the
        sandbox, database and broker stay. Returns the folder the counts go to."""
        for process in [p for p in self.processes if p.name != "sandbox"]:
            process.stop()
            self.processes.remove(process)
        self.count_dir = self.var_dir / "sqlcount"
        sqlcount.write_sitecustomize(self.count_dir / "site")
        self._start_web()
        self._start_workers()
        return self.count_dir

    def spawn_worker(self, name: str) -> ManagedProcess:
        """One Celery worker process (prefork, ``worker_concurrency`` children), not
        waited for; its log is ``<var dir>/<name>.log``."""
        return self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.options.worker_concurrency}",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                f"--hostname={name}-{os.getpid()}@localhost",
                "--loglevel=INFO",
            ],
        )

    def wait_ready(self, workers: list[ManagedProcess], *, timeout: float = 90) -> None:
        """Until every worker logged " ready."; raise with its log if one exits or stalls."""
        deadline = time.monotonic() + timeout
        pending = list(workers)
        while pending and time.monotonic() < deadline:
            for worker in list(pending):
                if not worker.running():
                    raise StackError(f"{worker.name} exited:\n{worker.log_tail()}")
                if " ready." in worker.log():
                    pending.remove(worker)
            time.sleep(0.1)
        if pending:
            raise StackError(
                f"{pending[0].name} not ready in {timeout:.0f} s:\n{pending[0].log_tail()}"
            )

    def _start_workers(self) -> None:
        self.wait_ready(
            [self.spawn_worker(f"worker-{index}") for index in range(1, self.options.workers + 1)]
        )

    def cpu_snapshot(self) -> dict[int, tuple[str, float]]:
        """CPU seconds (user + system) used so far, per live pid, with its component.

        Components: each child's process group (all Celery workers count as "worker"),
        this process ("bench client"), and on PostgreSQL the server backends of our
        database (matched by their process title) and the Redis server process.
        """
        groups: dict[int, str] = {}
        for process in self.processes:
            if process.process is not None:
                groups[process.process.pid] = process.name.split("-", 1)[0]
        database_marker = f" {self.backends.get('database_name')} "
        snapshot: dict[int, tuple[str, float]] = {}
        for pid, group, command, used in _process_usage():
            if pid == os.getpid():
                component = "bench client"
            elif group in groups:
                component = groups[group]
            elif command.startswith("postgres:") and database_marker in command:
                component = "postgres"
            elif command.startswith("redis-server") and self.backends.get("redis_version"):
                component = "redis"
            else:
                continue
            snapshot[pid] = (component, used)
        return snapshot

    def exited_processes(self) -> list[str]:
        """Children that are no longer running (none should be, mid-run)."""
        return [process.name for process in self.processes if not process.running()]

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {process.name} ({process.log_path}) ---\n{process.log_tail()}"
            for process in self.processes
        )


def cpu_used_between(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per component between two snapshots.

    Counted per pid, so a process that started in between counts fully and one that
    exited in between drops out (a small undercount) instead of going negative.
    """
    totals: dict[str, float] = {}
    for pid, (component, used) in after.items():
        previous = before.get(pid, (component, 0.0))[1]
        totals[component] = totals.get(component, 0.0) + used - previous
    return totals


def _process_usage() -> list[tuple[int, int, str, float]]:
    """``(pid, process group, command line, CPU seconds)`` of every live process."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage: list[tuple[int, int, str, float]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # Fields after the command name, which may itself contain spaces or ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        used = sum(int(value) for value in fields[11:13]) / ticks  # utime, stime
        usage.append((int(entry.name), int(fields[2]), command.strip(), used))
    return usage


def _wait_until_ok(process: ManagedProcess, url: str, *, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            if not process.running():
                raise StackError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                if session.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
    raise StackError(f"{process.name} did not answer within {timeout:.0f} s:\n{process.log_tail()}")


# Run by ``manage.py shell -c``: create the bench user (its provisioning is enqueued after
# commit, like any signup) on a usage-based plan with credit, and print the backends
# actually in use as one JSON line.
_SETUP_SCRIPT = """
import json, sqlite3
from django.conf import settings
from django.db import connection, transaction
from accounts.services import user_create

from billing.services import account_change_plan, credit_grant, plans_seed

with transaction.atomic():
    user = user_create(
        email=%(email)s, password=%(password)s, external_user_id=%(external_user_id)s
    )
    # A usage-based plan with ample credit: every image goes through the hold at
    # admission and the settle at payment, as a paying user's does.
    plans = {plan.slug: plan for plan in plans_seed()}
    account_change_plan(
        user=user, plan=plans["pay-as-you-go"], acting_user=None, reason="bench user"
    )
    credit_grant(
        user=user, amount_micros=10**24, reason="bench credit", acting_user=None,
        idempotency_key="bench-credit:%%s" %% user.pk,
    )

database = settings.DATABASES["default"]
info = {"database_vendor": connection.vendor}
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        info["database_version"] = cursor.fetchone()[0]
    info["database_name"] = database["NAME"]
    info["database_location"] = "%%s:%%s/%%s" %% (
        database.get("HOST") or "localhost", database.get("PORT") or 5432, database["NAME"]
    )
else:
    info["database_version"] = sqlite3.sqlite_version
    info["database_location"] = "temporary var dir"
info["cache_backend"] = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
info["broker"] = settings.CELERY_BROKER_URL.split(":", 1)[0]
info["stream_poll_seconds"] = settings.INFERENCE_STREAM_POLL_SECONDS
info["broker_polling_interval"] = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(
    "polling_interval"
)
if settings.REDIS_URL:
    import redis
    server = redis.Redis.from_url(settings.REDIS_URL).info("server")
    info["redis_version"] = server.get("redis_version")
    info["redis_db"] = settings.REDIS_URL.rsplit("/", 1)[-1]
print(json.dumps(info))
"""
