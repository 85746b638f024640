"""A real Celery worker process for end-to-end tests (not eager mode)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.child_process import ChildProcess


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
        self,
        *,
        name: str = "test",
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        include: tuple[str, ...] = (),
    ):
        """``include``: more task modules for the worker to import (``celery worker -I``)."""
        self.name = name
        self.concurrency = concurrency
        self.extra_env = env or {}
        self.log_path = Path(settings.MEDIA_ROOT).parent / f"worker-{name}-{os.getpid()}.log"
        self._child = ChildProcess(
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
                *(f"--include={module}" for module in include),
            ],
            what="celery worker",
            env=worker_env(self.extra_env),
            log_path=self.log_path,
            process_group=True,  # the pool children go with it
        )

    def start(self, timeout: float = 60) -> WorkerProcess:
        self._child.env = worker_env(self.extra_env)  # this test's database, now
        self._child.start(lambda: "ready." in self.log(), timeout=timeout, interval=0.1)
        return self

    def log(self) -> str:
        return self._child.output()

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool children), as a crash would."""
        self._child.kill()

    def stop(self) -> None:
        self._child.stop(timeout=15)


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
