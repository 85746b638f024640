from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from inference.models import Generation, GenerationStatus
from inference.services import generation_delete, generations_reconcile
from tests.factories import UserFactory
from tests.helpers import png_size, read
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        return UserFactory(email="verify@example.com")


def test_time_limits_are_ordered_for_safe_redelivery() -> None:
    http_timeouts = [
        settings.LIVEPEER_READ_TIMEOUT + settings.LIVEPEER_CONNECT_TIMEOUT,
        settings.LIVEPEER_SIGNER_READ_TIMEOUT + settings.LIVEPEER_CONNECT_TIMEOUT,
        settings.LIVEPEER_QUEUE_TIMEOUT,
        settings.PYMTHOUSE_READ_TIMEOUT + settings.PYMTHOUSE_CONNECT_TIMEOUT,
    ]
    visibility_timeout = settings.BROKER_VISIBILITY_TIMEOUT_SECONDS
    if settings.REDIS_URL:  # the value Redis really gets
        assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == visibility_timeout
    assert visibility_timeout > settings.INFERENCE_TIME_LIMIT > settings.INFERENCE_SOFT_TIME_LIMIT
    assert settings.INFERENCE_SOFT_TIME_LIMIT > max(http_timeouts)
    from inference.tasks import generation_run_task

    assert generation_run_task.acks_late is True
    assert generation_run_task.reject_on_worker_lost is True
    assert generation_run_task.soft_time_limit == settings.INFERENCE_SOFT_TIME_LIMIT
    assert generation_run_task.time_limit == settings.INFERENCE_TIME_LIMIT
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1


def test_verify_inference_command_runs_one_generation(sandbox: SandboxControl, user) -> None:
    out = io.StringIO()
    call_command(
        "verify_inference", email="verify@example.com", size="640x384", seed=11, stdout=out
    )

    generation = Generation.objects.get()
    output = out.getvalue()
    assert generation.status == GenerationStatus.SUCCEEDED
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in output.splitlines()
        if line.startswith("  ")
    )
    assert rows["generation id"] == str(generation.pk)
    assert rows["image"] == generation.image.path
    assert rows["manifest id (usage join key)"] == generation.manifest_id
    assert rows["runner price unit"] == "fixed"
    assert rows["runner price"] == "4768371000000 wei"
    assert rows["units paid"] == "1"
    assert rows["expected fee"] == "4768371000000 wei"
    assert rows["tickets paid"] == "1"
    assert generation.expected_fee_wei == 4_768_371_000_000
    assert png_size(read(generation.image.path)) == (640, 384)
    (event,) = sandbox.events()
    assert event["manifestId"] == generation.manifest_id
    assert event["feeWei"] == "4768371000000"
    assert event["externalUserId"] == user.external_user_id


def test_verify_inference_command_fails_loudly_when_out_of_credit(
    sandbox: SandboxControl, user
) -> None:
    sandbox.set_balance(user.external_user_id, 0)
    with pytest.raises(CommandError, match="generation failed: insufficient_credit"):
        call_command("verify_inference", email="verify@example.com", stdout=io.StringIO())
    assert sandbox.events() == []


def test_verify_inference_command_needs_a_user(sandbox: SandboxControl) -> None:
    with pytest.raises(CommandError, match="No such user"):
        call_command("verify_inference", email="nobody@example.com", stdout=io.StringIO())
    assert sandbox.requests() == []


def test_reconcile_requeues_lost_messages_and_fails_abandoned_runs(
    sandbox: SandboxControl, user, django_capture_on_commit_callbacks
) -> None:
    now = timezone.now()
    base = {
        "owner": user,
        "prompt": "p",
        "model_id": "ByteDance/SDXL-Lightning",
        "width": 512,
        "height": 512,
    }
    lost = Generation.objects.create(**base)
    fresh = Generation.objects.create(**base)
    abandoned = Generation.objects.create(
        **base,
        status=GenerationStatus.RUNNING,
        started_at=now - timedelta(hours=1),
        attempt_started_at=now - timedelta(hours=1),
        payment_claimed_at=now - timedelta(hours=1),
    )
    live = Generation.objects.create(
        **base, status=GenerationStatus.RUNNING, started_at=now, attempt_started_at=now
    )
    Generation.objects.filter(pk=lost.pk).update(created_at=now - timedelta(minutes=20))

    result = generations_reconcile()  # tasks run inline in tests: the lost one completes

    assert result == {"requeued": 1, "interrupted": 1}
    assert Generation.objects.get(pk=lost.pk).status == GenerationStatus.SUCCEEDED
    assert Generation.objects.get(pk=fresh.pk).status == GenerationStatus.QUEUED
    abandoned.refresh_from_db()
    # A dead worker held the payment claim: the outcome is unknown, the claim is kept.
    assert (abandoned.status, abandoned.error_code) == (GenerationStatus.FAILED, "outcome_unknown")
    assert abandoned.payment_claimed_at is not None
    assert Generation.objects.get(pk=live.pk).status == GenerationStatus.RUNNING
    lost.refresh_from_db()
    assert [e["manifestId"] for e in sandbox.events()] == [lost.manifest_id]


def test_delete_removes_the_image_file_after_commit(
    sandbox: SandboxControl, user, django_capture_on_commit_callbacks
) -> None:
    call_command("verify_inference", email="verify@example.com", stdout=io.StringIO())
    generation = Generation.objects.get()
    path = generation.image.path
    assert read(path)

    with django_capture_on_commit_callbacks(execute=True):
        generation_delete(generation=generation, acting_user=user)

    assert not Generation.objects.exists()
    with pytest.raises(FileNotFoundError):
        read(path)


def test_rejected_credentials_fail_the_generation_with_a_generic_message(
    sandbox: SandboxControl, user, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    from inference.services import generation_create

    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "f" * 64
    with django_capture_on_commit_callbacks(execute=True):
        generation = generation_create(owner=user, prompt="a cat", width=512, height=512)

    generation.refresh_from_db()
    assert (generation.status, generation.error_code) == (GenerationStatus.FAILED, "upstream_auth")
    assert generation.error_message == (
        "We couldn't authorize this generation with our billing provider. "
        "Our team has been notified."
    )
    assert "check pymthouse settings" in caplog.text  # the operator alert
    assert "f" * 64 not in caplog.text
    assert [r["status"] for r in sandbox.requests("/api/v1/oidc/token")] == [401]  # no retry storm
    assert sandbox.requests("/signer") == []
    assert sandbox.events() == []


def test_a_generation_deleted_while_queued_never_reaches_the_network(
    sandbox: SandboxControl, user, django_capture_on_commit_callbacks
) -> None:
    from inference.services import generation_create
    from inference.tasks import generation_run_task

    with django_capture_on_commit_callbacks(execute=False):
        generation = generation_create(owner=user, prompt="a cat", width=512, height=512)
    generation_delete(generation=generation, acting_user=user)

    generation_run_task.delay(str(generation.pk))  # the message that was already queued

    assert not Generation.objects.exists()
    assert sandbox.requests() == []


@pytest.mark.parametrize("honours", [False, True])
def test_ai_gateway_mints_a_user_token_only_for_a_gateway_that_honours_it(
    sandbox: SandboxControl, user, settings, honours: bool
) -> None:
    settings.LIVEPEER_GATEWAY_HONOURS_USER_TOKENS = honours
    out = io.StringIO()

    call_command("verify_inference", email=user.email, backend="ai-gateway", stdout=out)

    generation = Generation.objects.get()
    assert generation.status == GenerationStatus.SUCCEEDED
    assert generation.backend == "ai-gateway"
    token_path = f"/users/{user.external_user_id}/token"
    mints = [r for r in sandbox.requests() if str(r["path"]).endswith(token_path)]
    [post] = [r for r in sandbox.requests() if r["path"] == "/text-to-image"]
    if honours:
        assert [m["status"] for m in mints][-1] == 200  # after provisioning if needed
        assert post["auth"] == "bearer"
    else:
        assert (mints, post["auth"]) == ([], None)
    assert sandbox.events() == []  # the gateway pays; nobody is charged through pymthouse
    assert generation.expected_fee_wei is None
