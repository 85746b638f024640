"""The web process as it runs in production: Django under ASGI (uvicorn), in a subprocess
on the test database, for tests that need a real server (event streams, the browser)."""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tests.child_process import ChildProcess
from tests.sandbox_server import free_port
from tests.worker import worker_env


class WebServerProcess:
    def __init__(self, *, name: str = "web", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = Path(settings.MEDIA_ROOT).parent / f"{name}-{os.getpid()}.log"
        self._child = ChildProcess(
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
            what="web server",
            env=worker_env(self.extra_env),
            log_path=self.log_path,
            process_group=True,
        )

    def start(self, timeout: float = 60) -> WebServerProcess:
        self._child.env = worker_env(self.extra_env)  # this test's database, now
        self._child.start(self._healthy, timeout=timeout, interval=0.2)
        return self

    def _healthy(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self._child.output()

    def stop(self) -> None:
        self._child.stop(timeout=15)


@contextmanager
def running_web_server(*, env: dict[str, str] | None = None) -> Iterator[WebServerProcess]:
    server = WebServerProcess(env=env).start()
    try:
        yield server
    finally:
        server.stop()
