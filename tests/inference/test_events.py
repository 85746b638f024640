"""inference.events: a transition is published only once it commits; the watcher's
bookkeeping; the API's documented contract for the stream and the long poll."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client

from inference.events import (
    CHANNEL,
    GenerationState,
    Watcher,
    generation_changed,
    token_behind,
)
from inference.models import Generation, GenerationStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscriber():
    if not settings.REDIS_URL:
        pytest.skip("publishing goes through Redis pub/sub (REDIS_URL)")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    yield pubsub
    pubsub.close()
    client.close()


def _messages(pubsub, wait: float = 0.5) -> list[dict]:
    found, deadline = [], time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "message":
            found.append(json.loads(message["data"]))
    return found


@pytest.mark.django_db(transaction=True)
def test_a_transition_is_published_after_its_commit_and_never_after_a_rollback(
    subscriber,
) -> None:
    def rolled_back() -> None:
        with transaction.atomic():
            generation_changed(generation_id="g-1", status="running", stage="paying")
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert _messages(subscriber) == []

    with transaction.atomic():
        generation_changed(generation_id="g-2", status="running", stage="paying")
        assert _messages(subscriber, wait=0.2) == []  # not before the commit
    assert _messages(subscriber) == [{"id": "g-2", "status": "running", "stage": "paying"}]


def test_without_redis_nothing_is_published_and_nothing_is_deferred(
    django_capture_on_commit_callbacks,
) -> None:
    if settings.REDIS_URL:
        pytest.skip("the embedded defaults' behaviour")
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        generation_changed(generation_id="g-1", status="running", stage="paying")
    assert callbacks == []  # watchers read the row instead


def test_a_watcher_offers_each_new_state_once_and_drops_what_its_own_read_covered() -> None:
    async def scenario() -> list[str | None]:
        watcher = Watcher("g")
        queued = GenerationState("g", "queued", "queued")
        watcher.offer(queued)  # offered before the watcher read the row itself
        watcher.seen(queued.token)
        watcher.offer(queued)  # the same again: not news
        watcher.offer(GenerationState("g", "running", "paying"))
        watcher.offer(GenerationState("g", "running", "paying"))
        watcher.offer(GenerationState("g", "succeeded", "done"))
        got = [await watcher.next(0.1) for _ in range(3)]
        return [state.token if state else None for state in got]

    assert asyncio.run(scenario()) == ["running/paying", "succeeded/done", None]


def test_a_re_read_never_steps_a_watcher_back_but_messages_always_count() -> None:
    # "saving" is published without a row write: the row still says "generating".
    async def scenario() -> list[str | None]:
        watcher = Watcher("g")
        watcher.seen("running/generating")
        watcher.offer(GenerationState("g", "running", "saving"))  # the message
        watcher.offer(GenerationState("g", "running", "generating"), reread=True)  # behind
        watcher.offer(GenerationState("g", "running", "paying"), reread=True)  # behind
        # A message moving back (a released payment) is news; so is a new status.
        watcher.offer(GenerationState("g", "running", "connecting"))
        watcher.offer(GenerationState("g", "succeeded", "done"), reread=True)
        got = [await watcher.next(0.1) for _ in range(4)]
        return [state.token if state else None for state in got]

    assert asyncio.run(scenario()) == [
        "running/saving",
        "running/connecting",
        "succeeded/done",
        None,
    ]
    assert token_behind("running/generating", "running/saving")
    assert not token_behind("running/saving", "running/generating")
    assert not token_behind("queued/retrying", "running/paying")  # another status
    assert not token_behind("running/paying", "")


def test_the_openapi_schema_documents_the_stream_and_the_long_poll() -> None:
    schema = Client().get("/api/v1/openapi.json").json()
    events = schema["paths"]["/api/v1/generations/{generation_id}/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "`event: generation`" in events["description"]
    assert "`event: state`" in events["description"]
    assert "`event: gone`" in events["description"]
    poll = schema["paths"]["/api/v1/generations/{generation_id}/next"]["get"]
    params = {p["name"]: p["schema"] for p in poll["parameters"]}
    assert params["wait"]["maximum"] == 60
    assert params["wait"]["minimum"] == 0
    assert params["since"]["type"] == "string"
    assert "state" in schema["components"]["schemas"]["GenerationOut"]["properties"]


def test_a_long_poll_longer_than_a_minute_is_refused(django_capture_on_commit_callbacks) -> None:
    from tests.factories import UserFactory

    with django_capture_on_commit_callbacks():
        user = UserFactory()
    generation = Generation.objects.create(
        owner=user, prompt="a fox", model_id="m", width=512, height=512,
        status=GenerationStatus.RUNNING, stage="paying",
    )  # fmt: skip
    client = Client()
    client.force_login(user)

    response = client.get(f"/api/v1/generations/{generation.pk}/next?wait=61")

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["wait"]
