"""Start localstripe through ``python -m sandbox.stripe`` from tests, and talk to its
control routes (``/_config/...``). Stdlib only, like ``tests/sandbox_server.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

from tests.sandbox_server import REPO_ROOT

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WEBHOOK_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
)


class StripeSandboxError(RuntimeError):
    pass


class StripeProcess:
    """localstripe on 127.0.0.1:``port`` (in memory, from scratch)."""

    def __init__(self, port: int, *, webhook_url: str = "", webhook_secret: str = "") -> None:
        self.port = port
        self.webhook_args = (
            ["--webhook-url", webhook_url, "--webhook-secret", webhook_secret]
            if webhook_url
            else []
        )
        self.url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self, timeout: float = 20) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_WEBHOOK_")}
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.stripe", "--port", str(self.port), *self.webhook_args],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StripeSandboxError(f"localstripe exited:\n{self.stderr()}")
            try:
                with _OPENER.open(f"{self.url}/js.stripe.com/v3/", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise StripeSandboxError("localstripe did not start")

    def stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
        self._process = self._stderr = None

    def webhook_register(
        self, *, url: str, secret: str, events: tuple[str, ...] = WEBHOOK_EVENTS
    ) -> None:
        """The signed endpoint ``pixelhouse`` (replaces an earlier one)."""
        form = [("url", url), ("secret", secret)] + [("events[]", event) for event in events]
        self._post("/_config/webhooks/pixelhouse", urllib.parse.urlencode(form).encode())

    def webhook_unregister(self) -> None:
        """Point the endpoint at a closed port (localstripe cannot delete one)."""
        self.webhook_register(
            url="http://127.0.0.1:9/", secret="unused", events=("pixelhouse.none",)
        )

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST")
        with _OPENER.open(request, timeout=10) as response:
            if response.status != 200:
                raise StripeSandboxError(f"POST {path} -> {response.status}")
