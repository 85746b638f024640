"""A real Celery worker process for end-to-end tests (not eager mode)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess that must share this test session's database."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TEST_CELERY_EAGER": "false",
            "TEST_DATABASE_NAME": str(connection.settings_dict["NAME"]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def purge_broker() -> None:
    """Drop queued messages left over by an earlier test."""
    if settings.REDIS_URL:
        from config.celery import app

        app.control.purge()
    else:
        queue_dir = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        shutil.rmtree(queue_dir, ignore_errors=True)
        queue_dir.mkdir(parents=True, exist_ok=True)


class WorkerProcess:
    def __init__(
        self, *, name: str = "test", concurrency: int = 1, env: dict[str, str] | None = None
    ):
        self.name = name
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.log_path = Path(settings.MEDIA_ROOT).parent / f"worker-{name}-{os.getpid()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.concurrency}",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                f"--hostname={self.name}-{os.getpid()}@localhost",
                "--loglevel=INFO",
            ],
            cwd=REPO_ROOT,
            env=worker_env(self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log()}")
            if "ready." in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"celery worker did not become ready:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_worker(
    *, name: str = "test", env: dict[str, str] | None = None
) -> Iterator[WorkerProcess]:
    """A worker on an empty queue; while it runs, this process enqueues instead of
    running tasks inline."""
    from config.celery import app

    purge_broker()
    worker = WorkerProcess(name=name, env=env).start()
    app.conf.task_always_eager = False
    try:
        yield worker
    finally:
        app.conf.task_always_eager = True
        worker.stop()
        purge_broker()
