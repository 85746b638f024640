"""Polling is a cheap read: the status read, the long poll and the event stream write
nothing, not even allauth's session activity (config.middleware); other requests still
record it."""

from __future__ import annotations

import re

import pytest
from allauth.usersessions.models import UserSession
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inference.models import Generation, GenerationStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


@pytest.fixture
def signed_in(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        user = UserFactory()
    client = Client()
    client.force_login(user)
    client.get("/gallery/")  # the session's activity row exists, as after any page
    return user, client


def _generation(user, **fields) -> Generation:
    return Generation.objects.create(
        owner=user, prompt="a fox", model_id="ByteDance/SDXL-Lightning", width=512,
        height=512, **fields,
    )  # fmt: skip


async def _collect(chunks) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def _writes(client: Client, path: str) -> tuple[int, list[str], bytes]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
        body = (
            async_to_sync(_collect)(response.streaming_content)
            if response.streaming
            else response.content
        )
    return response.status_code, [q["sql"] for q in queries if WRITE.match(q["sql"])], body


def _last_seen(user) -> object:
    return UserSession.objects.get(user=user).last_seen_at


def test_a_status_poll_writes_nothing(signed_in) -> None:
    user, client = signed_in
    generation = _generation(user, status=GenerationStatus.RUNNING, stage="paying")
    before = _last_seen(user)

    for _ in range(3):
        status, writes, body = _writes(client, f"/api/v1/generations/{generation.pk}")
        assert status == 200
        assert b'"state":"running/paying"' in body.replace(b" ", b"")
        assert writes == []
    assert _last_seen(user) == before


def test_a_long_poll_and_a_finished_stream_write_nothing(signed_in) -> None:
    user, client = signed_in
    generation = _generation(
        user, status=GenerationStatus.SUCCEEDED, stage="done", finished_at=timezone.now()
    )
    before = _last_seen(user)

    status, writes, _ = _writes(
        client, f"/api/v1/generations/{generation.pk}/next?since=running/saving&wait=0"
    )
    assert (status, writes) == (200, [])
    status, writes, body = _writes(client, f"/api/v1/generations/{generation.pk}/events")
    assert (status, writes) == (200, [])
    assert body.startswith(b"retry: 2000\n\nid: succeeded/done\nevent: generation\ndata: {")
    assert body.count(b"event: ") == 1  # finished: the whole generation, then the end
    assert _last_seen(user) == before


def test_other_requests_still_record_the_sessions_activity(signed_in) -> None:
    user, client = signed_in
    UserSession.objects.filter(user=user).update(last_seen_at=timezone.now().replace(year=2020))

    status, writes, _ = _writes(client, "/gallery/")

    assert status == 200
    assert any("usersessions_usersession" in sql for sql in writes), writes
    assert _last_seen(user).year == timezone.now().year


def test_a_delete_on_the_status_path_is_tracked(signed_in) -> None:
    user, client = signed_in
    generation = _generation(
        user, status=GenerationStatus.SUCCEEDED, stage="done", finished_at=timezone.now()
    )
    UserSession.objects.filter(user=user).update(last_seen_at=timezone.now().replace(year=2020))

    response = client.delete(f"/api/v1/generations/{generation.pk}")

    assert response.status_code == 204
    assert _last_seen(user).year == timezone.now().year
