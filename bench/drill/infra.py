"""The drill's own Redis server and PostgreSQL cluster (never the shared ones).

``OwnRedis`` is a ``redis-server`` on a free loopback port that the drill starts, restarts
(``SHUTDOWN NOSAVE``: queued messages, unacknowledged messages and the cache are lost, as
in a crash) and stops, by its pid. ``OwnPostgres`` is a PostgreSQL cluster of the drill's
own (``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin``, as the ``postgres`` OS
user when the drill runs as root) in a temporary directory on a free loopback port,
restarted mid-load (``pg_ctl stop -m fast``, then ``start``) and removed at the end.
``DrillDatabase`` creates a fresh database on it, terminates its backends on demand
(``pg_terminate_backend``, limited to this database) and drops it at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
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


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb`` and ``pg_ctl``."""
    candidates = [
        Path(path)
        for path in glob.glob("/usr/lib/postgresql/*/bin")
        if (Path(path) / "initdb").is_file() and (Path(path) / "pg_ctl").is_file()
    ]
    if not candidates:
        raise InfraError("no /usr/lib/postgresql/*/bin with initdb and pg_ctl")

    def major(path: Path) -> int:
        version = path.parent.name
        return int(version) if version.isdigit() else 0

    return max(candidates, key=major)


class OwnPostgres:
    """A throwaway PostgreSQL cluster (trust auth, loopback only, fsync off)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.port = free_port()
        self.admin_url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.directory = Path(tempfile.mkdtemp(prefix="pixelhouse-drill-pg-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        # initdb refuses to run as root: run the tools as the postgres OS user.
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    def _tool(self, name: str, *args: str, timeout: float = 60) -> None:
        command = [*self._as_user, str(self.bin_dir / name), *args]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if completed.returncode != 0:
            raise InfraError(
                f"{name} failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}"
                f"\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def version(self) -> str:
        with psycopg.connect(self.admin_url, connect_timeout=5) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def init(self) -> None:
        if self._as_user:
            shutil.chown(self.directory, user="postgres", group="postgres")
        os.chmod(self.directory, 0o700)
        self._tool(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def start(self, timeout: float = 60) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._tool(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        self.started = True
        self._wait_answering(timeout)

    def _wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.Error:
                time.sleep(0.05)
        raise InfraError(f"postgres on port {self.port} did not answer in {timeout:.0f} s")

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            self._tool("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
            self.started = False

    def restart(self, *, down_seconds: float) -> tuple[datetime, datetime]:
        """``pg_ctl stop -m fast`` (every session is ended), ``down_seconds`` down, start.

        Returns (went down, answered a connection again) as UTC times.
        """
        went_down = utc_now()
        self.stop("fast")
        time.sleep(down_seconds)
        self.start()
        return went_down, utc_now()

    def remove(self) -> None:
        """Stop the cluster (immediately) and delete its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class DrillDatabase:
    """A database of the drill's own on its own Postgres cluster."""

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
