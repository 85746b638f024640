"""The event stream and the long poll of a real generation: a real worker process runs it
against the sandbox, and the web process is the production one (Django under ASGI,
uvicorn), read over real HTTP. With ``REDIS_URL`` the push goes through Redis pub/sub;
without, through the database fallback."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import User
from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from inference.tasks import generation_run_task
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from tests.web_server import WebServerProcess
from tests.worker import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

#: Every transition of a successful run, in order, as the worker writes them.
LIFECYCLE = [
    "running/authorizing",
    "running/connecting",
    "running/paying",
    "running/generating",
    "running/saving",
    "succeeded/done",
]


def _cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class EventStream:
    """An open ``text/event-stream`` response, read one event at a time."""

    def __init__(self, server: WebServerProcess, path: str, cookie: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.connection.request(
            "GET", path, headers={"Cookie": cookie, "Accept": "text/event-stream"}
        )
        self.response = self.connection.getresponse()

    def next(self) -> dict[str, str] | None:
        """The next event's fields (comments and ``retry`` skipped); None at the end."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if "event" in fields:
                    return fields
                fields = {}
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(": ")
            fields[name] = value

    def all(self) -> list[dict[str, str]]:
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self.connection.close()


def _user() -> User:
    return UserFactory()


def _queued(user: User) -> Generation:
    """A queued generation whose message is not sent yet (the test sends it)."""
    return generation_create(
        owner=user, prompt="a lighthouse at dusk", width=512, height=384, enqueue=False
    )


def test_the_event_stream_delivers_each_transition_of_a_real_run(
    sandbox: SandboxControl, worker_process: WorkerProcess, web_server: WebServerProcess
) -> None:
    # Each stage the runner works lasts a second, longer than the fallback's poll.
    sandbox.set_config(runnerLatencySeconds=1.0)
    user = _user()
    generation = _queued(user)
    stream = EventStream(web_server, f"/api/v1/generations/{generation.pk}/events", _cookie(user))
    assert stream.response.status == 200
    assert stream.response.getheader("Content-Type") == "text/event-stream"
    assert stream.response.getheader("Cache-Control") == "no-store"
    first = stream.next()
    assert first is not None
    assert first["event"] == "generation"
    assert first["id"] == "queued/queued"
    assert json.loads(first["data"])["status"] == "queued"

    generation_run_task.delay(str(generation.pk))
    events = stream.all()
    stream.close()

    states = [event["id"] for event in events]
    assert Generation.objects.get(pk=generation.pk).status == GenerationStatus.SUCCEEDED
    if settings.REDIS_URL:
        assert states == LIFECYCLE, states  # every transition, in order
    else:
        # The fallback reads the row every INFERENCE_STREAM_POLL_SECONDS: stages shorter
        # than that may be skipped; the rest come in order, each once.
        assert "running/generating" in states, states
        assert states == [state for state in LIFECYCLE if state in states], states
    assert [event["event"] for event in events] == ["state"] * (len(events) - 1) + ["generation"]
    for event in events[:-1]:
        data = json.loads(event["data"])
        assert data["id"] == str(generation.pk)
        assert f"{data['status']}/{data['stage']}" == event["id"] == data["state"]
    last = json.loads(events[-1]["data"])
    assert last["status"] == "succeeded"
    assert last["progress"] == 100
    assert last["image_url"] == f"/generations/{generation.pk}/image"
    assert last["payment"]["expected_fee_wei"] == "4768371000000"


def test_the_long_poll_answers_at_the_change_not_at_the_timeout(
    sandbox: SandboxControl, worker_process: WorkerProcess, web_server: WebServerProcess
) -> None:
    sandbox.set_config(runnerLatencySeconds=1.0)
    user = _user()
    generation = _queued(user)
    connection = http.client.HTTPConnection("127.0.0.1", web_server.port, timeout=30)
    cookie = _cookie(user)
    path = f"/api/v1/generations/{generation.pk}/next"

    connection.request("GET", f"{path}?since=running/paying&wait=30", headers={"Cookie": cookie})
    answer = connection.getresponse()
    assert answer.status == 200
    assert json.loads(answer.read())["state"] == "queued/queued"  # differs from since: at once
    kept_alive = connection.sock
    assert kept_alive is not None  # the server did not close it

    started = time.monotonic()
    generation_run_task.delay(str(generation.pk))
    seen = []
    state = "queued/queued"
    while not state.startswith("succeeded"):
        connection.request("GET", f"{path}?since={state}&wait=30", headers={"Cookie": cookie})
        answer = connection.getresponse()
        assert answer.status == 200
        state = json.loads(answer.read())["state"]
        seen.append(state)
        assert connection.sock is kept_alive  # every poll on the same connection
    connection.close()

    assert time.monotonic() - started < 20  # not one 30 s timeout was waited out
    assert "running/generating" in seen, seen
    assert seen == [s for s in LIFECYCLE if s in seen], seen


def test_a_stream_of_another_users_generation_is_a_404_and_writes_nothing(
    sandbox: SandboxControl, web_server: WebServerProcess
) -> None:
    owner, stranger = _user(), _user()
    generation = _queued(owner)
    for path in (
        f"/api/v1/generations/{generation.pk}/events",
        f"/api/v1/generations/{generation.pk}/next?wait=1",
    ):
        connection = http.client.HTTPConnection("127.0.0.1", web_server.port, timeout=10)
        connection.request("GET", path, headers={"Cookie": _cookie(stranger)})
        answer = connection.getresponse()
        assert answer.status == 404
        assert json.loads(answer.read()) == {"detail": "Not found."}
        connection.close()


def test_without_a_session_the_stream_is_refused(web_server: WebServerProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web_server.port, timeout=10)
    connection.request("GET", "/api/v1/generations/00000000-0000-0000-0000-000000000000/events")
    answer = connection.getresponse()
    assert answer.status == 401
    connection.close()
    assert socket  # loopback only (pytest-socket)


def _connections_to_this_database() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        (count,) = cursor.fetchone()
    return int(count)


def test_open_streams_hold_no_database_connection(
    sandbox: SandboxControl, web_server: WebServerProcess
) -> None:
    if connection_vendor() != "postgresql":
        pytest.skip("counts server-side connections (pg_stat_activity): PostgreSQL only")
    user = _user()
    cookie = _cookie(user)
    generations = [_queued(user) for _ in range(4)]
    warm = EventStream(web_server, f"/api/v1/generations/{generations[0].pk}/events", cookie)
    assert warm.next() is not None
    time.sleep(1.0)  # the web process's one watcher connection is open now
    before = _connections_to_this_database()

    # One after another: the web process's pool (DATABASE_POOL) may lend concurrent
    # requests a connection each; an open stream must have given its back.
    streams = []
    for g in generations[1:]:
        stream = EventStream(web_server, f"/api/v1/generations/{g.pk}/events", cookie)
        first = stream.next()
        assert first is not None
        assert first["id"] == "queued/queued"
        streams.append(stream)
    time.sleep(1.0)  # several fallback polls / the Redis subscription at work

    assert _connections_to_this_database() == before
    for stream in [warm, *streams]:
        stream.close()


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


def test_deleting_a_watched_generation_ends_its_stream_with_gone(
    sandbox: SandboxControl, web_server: WebServerProcess
) -> None:
    from inference.services import generation_delete

    user = _user()
    generation = _queued(user)
    stream = EventStream(web_server, f"/api/v1/generations/{generation.pk}/events", _cookie(user))
    first = stream.next()
    assert first is not None
    assert first["id"] == "queued/queued"

    generation_delete(generation=generation, acting_user=user)
    events = stream.all()
    stream.close()

    assert [(event["event"], json.loads(event["data"])) for event in events] == [
        ("gone", {"id": str(generation.pk)})
    ]
