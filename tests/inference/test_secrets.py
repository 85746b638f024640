"""Tokens and secrets never land in logs, the database or the broker."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from tests.worker import purge_broker

pytestmark = pytest.mark.django_db

JWT_PREFIX = "eyJ"  # every token pymthouse (and the sandbox) mints is a JWT


def _forbidden() -> list[str]:
    secret = settings.PYMTHOUSE_M2M_CLIENT_SECRET
    basic = base64.b64encode(f"{settings.PYMTHOUSE_M2M_CLIENT_ID}:{secret}".encode()).decode()
    return [secret, basic, JWT_PREFIX]


def test_a_generation_leaves_no_token_in_logs_or_the_database(
    sandbox: SandboxControl, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("", "urllib3", "requests", "celery", "django", "integrations", "inference"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()
        generation = generation_create(owner=user, prompt="a cat", width=512, height=512)

    generation.refresh_from_db()
    assert generation.status == GenerationStatus.SUCCEEDED
    assert len(caplog.records) > 10  # the run really was logged at DEBUG
    dump = io.StringIO()
    call_command("dumpdata", "accounts", "inference", stdout=dump)
    for value in _forbidden():
        assert value not in caplog.text
        assert value not in dump.getvalue()


def test_the_task_message_carries_only_the_generation_id(sandbox: SandboxControl) -> None:
    from config.celery import app

    user = UserFactory()
    generation = generation_create(owner=user, prompt="a cat", width=512, height=512, enqueue=False)
    from inference.tasks import generation_run_task

    purge_broker()
    app.conf.task_always_eager = False
    try:
        generation_run_task.delay(str(generation.pk))
        raw = _queued_messages()
    finally:
        app.conf.task_always_eager = True
        purge_broker()

    assert len(raw) == 1
    envelope = json.loads(raw[0])
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert args == [str(generation.pk)]
    assert kwargs == {}
    for value in _forbidden():
        assert value not in raw[0]
    assert Generation.objects.get(pk=generation.pk).status == GenerationStatus.QUEUED


def _queued_messages() -> list[str]:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        return [item.decode() for item in client.lrange(queue, 0, -1)]
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    return [
        path.read_text() for path in sorted(folder.iterdir()) if path.name.endswith(f".{queue}.msg")
    ]
