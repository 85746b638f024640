"""The web process as it runs in production: Django under ASGI (uvicorn), in a subprocess
on the test database, for tests that need a real server (event streams, the browser)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tests.sandbox_server import free_port
from tests.worker import REPO_ROOT, worker_env


class WebServerProcess:
    def __init__(self, *, name: str = "web", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = Path(settings.MEDIA_ROOT).parent / f"{name}-{os.getpid()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WebServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--log-level=warning",
                "--no-access-log",
                "--timeout-graceful-shutdown=3",  # open event streams do not hold it up
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
                raise RuntimeError(f"web server exited early:\n{self.log()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"web server did not answer:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@contextmanager
def running_web_server(*, env: dict[str, str] | None = None) -> Iterator[WebServerProcess]:
    server = WebServerProcess(env=env).start()
    try:
        yield server
    finally:
        server.stop()
