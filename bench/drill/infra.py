"""The drill's own Redis server and Postgres database (never the shared ones).

``OwnRedis`` is a ``redis-server`` on a free loopback port that the drill starts, restarts
(``SHUTDOWN NOSAVE``: queued messages, unacknowledged messages and the cache are lost, as
in a crash) and stops, by its pid. ``DrillDatabase`` creates a fresh database on the shared
Postgres server, terminates its backends on demand (``pg_terminate_backend``, limited to
this database) and drops it at the end; the server itself is never restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from tests.sandbox_server import free_port


class InfraError(RuntimeError):
    pass


def utc_now() -> datetime:
    return datetime.now(UTC)


class OwnRedis:
    """``redis-server --port <free>`` without persistence, in its own process group."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self, timeout: float = 15) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InfraError(f"redis-server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise InfraError(f"redis-server on port {self.port} did not answer in {timeout:.0f} s")

    def restart(self, *, down_seconds: float) -> tuple[datetime, datetime]:
        """``SHUTDOWN NOSAVE``, stay down ``down_seconds``, start again on the same port.

        Returns (went down, answered PING again) as UTC times.
        """
        went_down = utc_now()
        try:
            self.client().shutdown(nosave=True)
        except redis.RedisError:
            pass
        self._wait_exit()
        time.sleep(down_seconds)
        self.start()
        return went_down, utc_now()

    def _wait_exit(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
        self._wait_exit()


class DrillDatabase:
    """A database of the drill's own on the shared Postgres server."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def create(self) -> None:
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` on every session of this database (only this one)."""
        with self._admin() as connection:
            row = connection.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def drop(self) -> None:
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
