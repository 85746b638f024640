"""Polling is a cheap read: the status read, the long poll and the event stream write
nothing, not even allauth's session activity (config.middleware); other requests still
record it, at most once per USERSESSIONS_ACTIVITY_INTERVAL_SECONDS from the same client."""

from __future__ import annotations

import re
from datetime import timedelta

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


def test_a_session_seen_moments_ago_from_the_same_client_is_not_written_again(
    signed_in,
) -> None:
    user, client = signed_in
    recent = timezone.now() - timedelta(seconds=30)
    UserSession.objects.filter(user=user).update(last_seen_at=recent)

    for path in ("/gallery/", "/generate/"):
        status, writes, _ = _writes(client, path)
        assert status == 200
        assert not any("usersessions_usersession" in sql for sql in writes), writes
    assert _last_seen(user) == recent


def test_a_new_address_or_browser_is_written_at_once(signed_in) -> None:
    user, client = signed_in
    recent = timezone.now() - timedelta(seconds=5)
    UserSession.objects.filter(user=user).update(last_seen_at=recent)

    status, writes, _ = _writes(client, "/gallery/")  # same client: nothing
    assert not any("usersessions_usersession" in sql for sql in writes)
    with CaptureQueriesContext(connection):
        response = client.get("/gallery/", HTTP_USER_AGENT="Another browser/2.0")
    assert response.status_code == 200
    row = UserSession.objects.get(user=user)
    assert row.user_agent == "Another browser/2.0"
    assert row.last_seen_at > recent
    other = UserSession.objects.filter(user=user).update(last_seen_at=recent)
    assert other == 1
    client.get("/gallery/", HTTP_USER_AGENT="Another browser/2.0", REMOTE_ADDR="10.1.2.3")
    row = UserSession.objects.get(user=user)
    assert row.ip == "10.1.2.3"
    assert row.last_seen_at > recent


def test_an_interval_of_zero_writes_on_every_request(signed_in, settings) -> None:
    settings.USERSESSIONS_ACTIVITY_INTERVAL_SECONDS = 0
    user, client = signed_in
    recent = timezone.now() - timedelta(seconds=1)
    UserSession.objects.filter(user=user).update(last_seen_at=recent)

    status, writes, _ = _writes(client, "/gallery/")

    assert status == 200
    assert any("usersessions_usersession" in sql for sql in writes), writes
    assert _last_seen(user) > recent
