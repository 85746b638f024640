"""The platform run: generations submitted and polled through the JSON API, as a client would.

A ``requests.Session`` logs in through the allauth form; each of ``concurrency`` threads
then loops: ``POST /api/v1/generations``, poll ``GET /api/v1/generations/{id}`` every
``poll_interval`` until it is finished, next. End to end is client-side (monotonic) from
just before the POST to the response of the poll that saw ``succeeded``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import requests  # noqa: TID251 -- the benchmark is an outside HTTP client of the stack

from bench.batch import GenerationFailedError
from bench.stats import Sample

logger = logging.getLogger(__name__)

LOGIN_PATH = "/accounts/login/"
GENERATIONS_PATH = "/api/v1/generations"


@dataclass(frozen=True)
class PlatformOptions:
    web_url: str
    email: str
    password: str
    width: int
    height: int
    model_id: str | None
    poll_interval: float
    timeout: float


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route loopback through a proxy from the environment
    return session


def login(options: PlatformOptions) -> requests.cookies.RequestsCookieJar:
    """Log in through the allauth form; returns the session and CSRF cookies."""
    with _session() as session:
        url = options.web_url + LOGIN_PATH
        page = session.get(url, timeout=10)
        page.raise_for_status()
        response = session.post(
            url,
            data={
                "login": options.email,
                "password": options.password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": url},
            allow_redirects=False,
            timeout=10,
        )
        if response.status_code != 302 or "sessionid" not in session.cookies:
            raise GenerationFailedError(
                f"login as {options.email} failed: HTTP {response.status_code}"
            )
        return session.cookies


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


class PlatformClient:
    def __init__(self, options: PlatformOptions, cookies: requests.cookies.RequestsCookieJar):
        self.options = options
        self.cookies = cookies
        self._local = threading.local()

    def _thread_session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = _session()
            session.cookies.update(self.cookies)
            session.headers["X-CSRFToken"] = self.cookies["csrftoken"]
            self._local.session = session
        return session

    def generate(self, index: int) -> Sample:
        options = self.options
        session = self._thread_session()
        body: dict[str, object] = {
            "prompt": f"pixelhouse bench image {index}",
            "width": options.width,
            "height": options.height,
            "seed": index,
        }
        if options.model_id:
            body["model_id"] = options.model_id
        started = time.monotonic()
        response = session.post(options.web_url + GENERATIONS_PATH, json=body, timeout=30)
        submitted = time.monotonic()
        if response.status_code != 201:
            raise GenerationFailedError(
                f"submit #{index}: HTTP {response.status_code}: {response.text[:500]}"
            )
        generation_id = response.json()["id"]
        url = f"{options.web_url}{GENERATIONS_PATH}/{generation_id}"
        polls = 0
        poll_seconds = 0.0
        deadline = started + options.timeout
        while True:
            time.sleep(options.poll_interval)
            poll_started = time.monotonic()
            reply = session.get(url, timeout=30)
            poll_seconds += time.monotonic() - poll_started
            polls += 1
            if reply.status_code != 200:
                raise GenerationFailedError(
                    f"generation {generation_id}: poll HTTP {reply.status_code}: {reply.text[:500]}"
                )
            payload = reply.json()
            if payload["status"] == "succeeded":
                break
            if payload["status"] == "failed":
                raise GenerationFailedError(
                    f"generation {generation_id} failed: {payload['error']}"
                )
            if time.monotonic() > deadline:
                hint = ""
                if payload["status"] == "queued" and not payload["started_at"]:
                    # No worker ever started it: its broker message never arrived.
                    hint = " (never started: the broker message was probably lost)"
                raise GenerationFailedError(
                    f"generation {generation_id} still {payload['status']}/{payload['stage']}"
                    f" after {options.timeout:.0f} s{hint}"
                )
        finished = time.monotonic()
        stages = {
            "submit": submitted - started,
            "polls": float(polls),
            "poll_round_trip": poll_seconds / polls,
        }
        for name, start, end in (
            ("server_total", payload["created_at"], payload["finished_at"]),
            ("queue_wait", payload["created_at"], payload["started_at"]),
            ("worker_run", payload["started_at"], payload["finished_at"]),
        ):
            seconds = _seconds_between(start, end)
            if seconds is not None:
                stages[name] = seconds
        # What the client sees beyond the server's own created→finished span: the
        # submit round trip before the row existed and the polling granularity after.
        if "server_total" in stages:
            stages["client_visible_extra"] = (finished - started) - stages["server_total"]
        return Sample(end_to_end=finished - started, stages=stages)
