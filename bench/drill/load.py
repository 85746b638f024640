"""Submissions through the JSON API at a steady pace, and the beat stand-in.

``Submitter`` logs in like a browser and posts generation ``i`` at ``t0 + i × window / n``
from a few threads; a refused or failed POST (an outage) is retried for up to
``give_up`` seconds. Every attempt is recorded with its UTC time, so recovery after an
outage can be read off (first 201 after the service came back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import requests  # noqa: TID251 -- the drill is an outside HTTP client of the stack

from bench.drill.infra import utc_now
from bench.platform_run import GENERATIONS_PATH, PlatformOptions, login


@dataclass(frozen=True)
class Attempt:
    index: int
    at: datetime  # when the answer (or the error) came back
    status: int | None  # None: no HTTP answer (connection error, timeout)
    generation_id: str | None
    error: str = ""


class Submitter:
    def __init__(
        self,
        *,
        web_url: str,
        email: str,
        password: str,
        count: int,
        window: float,
        seed: int,
        threads: int = 3,
        give_up: float = 30.0,
    ) -> None:
        self.options = PlatformOptions(
            web_url=web_url,
            email=email,
            password=password,
            width=512,
            height=512,
            model_id=None,
            timeout=60.0,
        )
        self.count = count
        self.window = window
        self.seed = seed
        self.threads = threads
        self.give_up = give_up
        self.attempts: list[Attempt] = []
        self.abandoned: list[int] = []
        self._lock = threading.Lock()
        self._next = 0
        self._workers: list[threading.Thread] = []

    def start(self, t0: float) -> None:
        cookies = login(self.options)
        for number in range(self.threads):
            thread = threading.Thread(
                target=self._loop, args=(t0, cookies), name=f"submit-{number}", daemon=True
            )
            thread.start()
            self._workers.append(thread)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.count:
                return None
            index = self._next
            self._next += 1
            return index

    def _loop(self, t0: float, cookies: requests.cookies.RequestsCookieJar) -> None:
        session = requests.Session()
        session.trust_env = False
        session.cookies.update(cookies)
        session.headers["X-CSRFToken"] = cookies["csrftoken"]
        while (index := self._take()) is not None:
            delay = t0 + index * self.window / self.count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._submit(session, index)

    def _submit(self, session: requests.Session, index: int) -> None:
        body = {
            "prompt": f"pixelhouse fault drill seed {self.seed} image {index}",
            "width": self.options.width,
            "height": self.options.height,
            "seed": index,
        }
        deadline = time.monotonic() + self.give_up
        while True:
            try:
                response = session.post(
                    self.options.web_url + GENERATIONS_PATH, json=body, timeout=10
                )
            except requests.RequestException as exc:
                self._record(Attempt(index, utc_now(), None, None, type(exc).__name__))
            else:
                if response.status_code == 201:
                    self._record(Attempt(index, utc_now(), 201, response.json()["id"]))
                    return
                self._record(
                    Attempt(index, utc_now(), response.status_code, None, response.text[:120])
                )
            if time.monotonic() > deadline:
                with self._lock:
                    self.abandoned.append(index)
                return
            time.sleep(0.5)

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)


class Beat:
    """Sends the reconcile task every ``interval`` seconds, as celery beat would."""

    def __init__(self, send: Callable[[], None], interval: float) -> None:
        self.send = send
        self.interval = interval
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.send()
                self.sent += 1
            except Exception:
                self.failed += 1
