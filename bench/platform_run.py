"""The platform run: generations submitted and followed through the JSON API, as a client would.

A ``requests.Session`` logs in through the allauth form; each of ``concurrency`` threads
then loops, on its own keep-alive ``requests.Session``: ``POST /api/v1/generations``,
then ``GET /api/v1/generations/{id}/events`` (Server-Sent Events, pushed from the
worker's transitions) read until the final ``event: generation``, next. That event
carries the whole generation (status, timestamps, image URL), so no ``GET`` follows.
End to end is client-side (monotonic) from just before the POST to the moment the final
event with ``succeeded`` was read.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests  # noqa: TID251 -- the benchmark is an outside HTTP client of the stack

from bench.batch import GenerationFailedError
from bench.stats import Sample

logger = logging.getLogger(__name__)

LOGIN_PATH = "/accounts/login/"
GENERATIONS_PATH = "/api/v1/generations"
#: Statuses after which a generation does not change (inference.models.FINISHED_STATUSES).
FINISHED = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class PlatformOptions:
    web_url: str
    email: str
    password: str
    width: int
    height: int
    model_id: str | None
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


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


def sse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events of a ``text/event-stream``, by the WHATWG rules the endpoint needs.

    ``event``/``data``/``id`` fields; several ``data`` lines join with a newline; a
    blank line dispatches; comments (``: keep-alive``) and ``retry`` are skipped, and so
    is a block without data.
    """
    event, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event=event, data="\n".join(data), id=event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


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
        payload, events, first_event, finished, finished_wall = self._follow(
            session, generation_id, started
        )
        stages = {
            "submit": submitted - started,
            "stream_first_event": first_event - submitted,
            "events": float(events),
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
        # submit round trip before the row existed and the push after the last write.
        if "server_total" in stages:
            stages["client_visible_extra"] = (finished - started) - stages["server_total"]
        if payload.get("finished_at"):
            stages["push_delay"] = (
                finished_wall - datetime.fromisoformat(payload["finished_at"])
            ).total_seconds()
        return Sample(end_to_end=finished - started, stages=stages)

    def _follow(
        self, session: requests.Session, generation_id: str, started: float
    ) -> tuple[dict[str, Any], int, float, float, datetime]:
        """Read the generation's event stream until its final ``generation`` event.

        Returns that event's generation, the number of events read, when the first
        arrived, and when the final one was read (monotonic, and wall clock). The stream
        is then read to its end (the server closes it right after the final event), so
        the connection goes back to the session's pool.
        """
        options = self.options
        url = f"{options.web_url}{GENERATIONS_PATH}/{generation_id}/events"
        deadline = started + options.timeout
        final: dict[str, Any] | None = None
        last: dict[str, Any] = {}
        events = 0
        first_event = finished = 0.0
        finished_wall = datetime.now(tz=UTC)
        with session.get(url, stream=True, timeout=(10, options.timeout)) as reply:
            if reply.status_code != 200:
                raise GenerationFailedError(
                    f"generation {generation_id}: events HTTP {reply.status_code}:"
                    f" {reply.text[:500]}"
                )
            for event in sse_events(reply.iter_lines(decode_unicode=True)):
                events += 1
                if events == 1:
                    first_event = time.monotonic()
                if event.event == "gone":
                    raise GenerationFailedError(f"generation {generation_id} is gone")
                last = json.loads(event.data)
                if event.event == "generation" and last["status"] in FINISHED:
                    finished, finished_wall = time.monotonic(), datetime.now(tz=UTC)
                    final = last
                    continue  # the stream ends right after; read to its end
                if time.monotonic() > deadline:
                    raise GenerationFailedError(
                        f"generation {generation_id} still {last.get('state')}"
                        f" after {options.timeout:.0f} s"
                    )
        if final is None:
            raise GenerationFailedError(
                f"generation {generation_id}: the event stream ended at"
                f" {last.get('state')!r} without a final event"
            )
        if final["status"] != "succeeded":
            raise GenerationFailedError(
                f"generation {generation_id} {final['status']}: {final.get('error')}"
            )
        return final, events, first_event, finished, finished_wall
