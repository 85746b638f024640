"""End to end through a real Celery worker process against the sandbox."""

from __future__ import annotations

import time

import pytest

from accounts.models import User
from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from inference.tasks import generation_run_task
from tests.factories import UserFactory
from tests.helpers import png_size, read, wait_for
from tests.sandbox_server import SandboxControl
from tests.worker import WorkerProcess, running_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PAYMENT = "/signer/generate-live-payment"
TOKEN = "/api/v1/oidc/token"


def _finished(generation: Generation, timeout: float = 30.0) -> Generation:
    wait_for(lambda: Generation.objects.get(pk=generation.pk).is_finished, timeout=timeout)
    return Generation.objects.get(pk=generation.pk)


def _create(user: User, **fields) -> Generation:
    params = {"prompt": "a lighthouse at dusk", "width": 512, "height": 384, "seed": 7, **fields}
    return generation_create(owner=user, **params)


def _task_done(worker: WorkerProcess, task_id: str) -> None:
    wait_for(lambda: f"[{task_id}] succeeded" in worker.log())


def _redeliver(generation: Generation) -> None:
    """What the broker redelivers after a worker died: the same message (same task id)."""
    attempt_id = Generation.objects.get(pk=generation.pk).attempt_id
    assert attempt_id
    generation_run_task.apply_async((str(generation.pk),), task_id=attempt_id)


def _events_for(sandbox: SandboxControl, generation: Generation) -> list[dict]:
    """Usage events of this generation, joined on the manifest id stored at claim time."""
    manifest_id = Generation.objects.get(pk=generation.pk).manifest_id
    return [e for e in sandbox.events() if manifest_id and e["manifestId"] == manifest_id]


def test_generation_succeeds_and_pays_exactly_one_ticket(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert png_size(read(generation.image.path)) == (512, 384)
    assert generation.image_seed == 7
    assert generation.tickets_paid == 1
    assert generation.attempts == 1
    assert generation.backend == "live-runner"
    assert generation.runner_url.startswith(sandbox.url + "/apps/")
    assert generation.runner_url.endswith("/app/")
    assert generation.price_unit == "fixed"
    assert generation.expected_fee_wei == 4_768_371_000_000
    (event,) = _events_for(sandbox, generation)
    assert event["externalUserId"] == user.external_user_id
    assert event["manifestId"] == generation.manifest_id
    assert int(event["feeWei"]) == generation.expected_fee_wei
    assert len(sandbox.events()) == 1
    assert len(sandbox.requests(PAYMENT)) == 1


def test_signer_outage_before_payment_is_retried_and_pays_once(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault(
        "POST",
        PAYMENT,
        status=503,
        body={"error": {"message": "Service Unavailable Error"}},
        times=1,
    )
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.attempts == 2
    assert generation.tickets_paid == 1
    assert len(_events_for(sandbox, generation)) == 1
    assert [r["status"] for r in sandbox.requests(PAYMENT)] == [503, 200]


def test_out_of_credit_at_mint_fails_cleanly_without_calling_the_network(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    user = UserFactory()
    sandbox.set_balance(user.external_user_id, 0)

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.FAILED
    assert generation.error_code == "insufficient_credit"
    assert generation.error_message == "You're out of credit. Add funds to keep generating images."
    assert generation.tickets_paid == 0
    assert not generation.image
    assert sandbox.events() == []
    assert sandbox.requests("/signer") == []
    assert sandbox.requests("/apps") == []


def test_insufficient_balance_at_the_signer_fails_without_a_ticket(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault(
        "POST", PAYMENT, status=483, body={"error": {"message": "insufficient balance"}}
    )
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.FAILED
    assert generation.error_code == "insufficient_credit"
    assert generation.payment_claimed_at is None
    assert generation.tickets_paid == 0
    assert sandbox.events() == []
    assert len(sandbox.requests(PAYMENT)) == 1


def test_runner_failure_before_payment_fails_over_to_the_next_runner(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", "/apps/*", status=502, body="bad gateway", times=1)
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    runner_calls = sandbox.requests("/apps/")
    assert runner_calls[0]["status"] == 502
    assert not generation.runner_url.endswith(runner_calls[0]["path"])
    assert generation.runner_url.endswith(runner_calls[-1]["path"])
    assert len(_events_for(sandbox, generation)) == 1
    assert len(sandbox.events()) == 1


def test_dropped_connection_at_payment_is_never_paid_twice(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", PAYMENT, drop=True, times=1)
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.FAILED
    assert generation.error_code == "outcome_unknown"
    assert generation.payment_claimed_at is not None
    assert len(sandbox.requests(PAYMENT)) == 1  # no second ticket request, ever

    redelivered = generation_run_task.delay(str(generation.pk))  # a redelivery changes nothing
    _task_done(worker_process, redelivered.id)
    assert len(sandbox.requests(PAYMENT)) == 1
    assert Generation.objects.get(pk=generation.pk).error_code == "outcome_unknown"


def test_redelivery_of_a_finished_generation_does_nothing(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    user = UserFactory()
    generation = _finished(_create(user))
    assert generation.status == GenerationStatus.SUCCEEDED
    requests_before = len(sandbox.requests())

    for _ in range(2):
        _task_done(worker_process, generation_run_task.delay(str(generation.pk)).id)

    assert Generation.objects.get(pk=generation.pk).attempts == 1
    assert len(sandbox.requests()) == requests_before
    assert len(sandbox.events()) == 1


def test_worker_killed_after_paying_is_not_paid_again_on_redelivery(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.set_config(runnerLatencySeconds=5)
    user = UserFactory()
    generation = _create(user)
    wait_for(lambda: Generation.objects.get(pk=generation.pk).stage == "generating")

    worker_process.kill()
    replacement = WorkerProcess(name="replacement").start()
    try:
        _redeliver(generation)
        generation = _finished(generation)
    finally:
        replacement.stop()

    assert generation.status == GenerationStatus.FAILED
    assert generation.error_code == "outcome_unknown"
    assert generation.payment_claimed_at is not None  # kept: billing settles the one ticket
    assert len(sandbox.requests(PAYMENT)) == 1
    assert len(sandbox.events()) == 1  # the one ticket, which billing will settle


def test_worker_killed_before_paying_completes_on_redelivery(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", TOKEN, delay=4, times=1)
    user = User.objects.create_user(email="k@example.com", password="pw-test-12345")
    generation = _create(user)
    wait_for(lambda: Generation.objects.get(pk=generation.pk).stage == "authorizing")

    worker_process.kill()
    replacement = WorkerProcess(name="replacement").start()
    try:
        _redeliver(generation)
        generation = _finished(generation)
    finally:
        replacement.stop()

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.attempts == 2
    assert len(_events_for(sandbox, generation)) == 1
    assert len(sandbox.requests(PAYMENT)) == 1


def test_ai_gateway_backend_end_to_end(sandbox: SandboxControl, transactional_db) -> None:
    with running_worker(name="gateway", env={"INFERENCE_BACKEND": "ai-gateway"}):
        user = UserFactory()
        generation = _finished(_create(user, width=640, height=448))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.backend == "ai-gateway"
    assert png_size(read(generation.image.path)) == (640, 448)
    # go-livepeer's gateway pays with its own key: pymthouse charges nobody, and no
    # user token is minted or sent for it.
    assert sandbox.events() == []
    assert sandbox.requests("/signer") == []
    [post] = sandbox.requests("/text-to-image")
    assert post["auth"] is None
    assert generation.expected_fee_wei is None


def test_rolled_back_creation_never_reaches_the_network(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    from django.db import transaction

    user = UserFactory()
    wait_for(lambda: User.objects.get(pk=user.pk).provisioning_status == "provisioned")

    def create_then_fail() -> None:
        with transaction.atomic():
            _create(user)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        create_then_fail()

    time.sleep(1.5)
    assert Generation.objects.count() == 0
    assert sandbox.requests(TOKEN) == []
    assert sandbox.requests("/signer") == []


def test_signer_asking_for_fresh_payment_params_is_handled_in_one_run(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault(
        "POST",
        PAYMENT,
        status=480,
        body={"error": {"message": "refresh session"}},
        times=1,
    )
    user = UserFactory()

    generation = _finished(_create(user))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.attempts == 1  # refreshed inside the run, no task retry
    assert generation.tickets_paid == 1
    assert [r["status"] for r in sandbox.requests(PAYMENT)] == [480, 200]
    assert len(_events_for(sandbox, generation)) == 1


def test_price_above_our_limit_fails_without_a_ticket(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", PAYMENT, status=481, body={"error": {"message": "price exceeded"}})
    user = UserFactory()

    generation = _finished(_create(user))

    assert (generation.status, generation.error_code) == (GenerationStatus.FAILED, "price_exceeded")
    assert generation.payment_claimed_at is None
    assert sandbox.events() == []


def test_queued_runner_job_is_polled_to_completion(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=1.5)
    user = UserFactory()

    generation = _finished(_create(user, width=256, height=640))

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.upstream_request_id != ""
    assert png_size(read(generation.image.path)) == (256, 640)
    assert len(_events_for(sandbox, generation)) == 1


def test_paid_call_dropped_after_sending_is_never_resent_nor_paid_again(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    runner = "/apps/bytedance-sdxl-lightning-1/app/"
    sandbox.add_fault("POST", runner, delay=0.001, times=1)  # the unpaid challenge passes through
    sandbox.add_fault("POST", runner, drop=True, times=1)  # the paid call is cut off after sending
    user = UserFactory()

    generation = _finished(_create(user))

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert generation.runner_url.endswith(runner)
    assert generation.tickets_paid == 1
    assert generation.payment_claimed_at is not None
    assert len(sandbox.requests(PAYMENT)) == 1
    assert len(sandbox.requests(runner)) == 2  # challenge, one paid send; never re-sent
    assert len(_events_for(sandbox, generation)) == 1


def test_an_unexpected_error_in_the_worker_ends_the_generation_within_the_task(
    sandbox: SandboxControl, transactional_db
) -> None:
    # A configuration error the worker only meets mid-run (the markup must be >= 1;
    # tests/settings.py applies it after config/settings.py's import-time check).
    with running_worker(name="misconfigured", env={"TEST_LIVEPEER_MAX_PRICE_MARKUP": "0.5"}):
        user = UserFactory()
        generation = _finished(_create(user), timeout=30)  # no reconcile runs here

    assert (generation.status, generation.error_code) == ("failed", "internal_error")
    assert generation.error_message == (
        "Something went wrong on our side and this image could not be generated. "
        "Our team has been notified; please try again."
    )
    assert generation.attempts == 1
    assert generation.payment_claimed_at is None
    assert sandbox.requests(PAYMENT) == []
