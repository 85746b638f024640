"""Start localstripe through ``python -m sandbox.stripe`` from tests, and talk to its
control routes (``/_config/...``). Stdlib only, like ``tests/sandbox_server.py``."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from tests.child_process import ChildProcess, ChildProcessError
from tests.sandbox_server import url_answers_200

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
        self._child: ChildProcess | None = None

    def start(self, timeout: float = 20) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_WEBHOOK_")}
        child = ChildProcess(
            [sys.executable, "-m", "sandbox.stripe", "--port", str(self.port), *self.webhook_args],
            what="localstripe",
            env=environment,
            stdout=False,
        )
        try:
            child.start(lambda: url_answers_200(f"{self.url}/js.stripe.com/v3/"), timeout=timeout)
        except ChildProcessError as exc:
            raise StripeSandboxError(str(exc)) from exc
        self._child = child

    def stderr(self) -> str:
        return self._child.output() if self._child is not None else ""

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        self._child = None

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
