"""Issue 17 item 5: the owner cancels a generation before its payment (the hold comes back
to the micro and nothing reaches the network after it) and retries a failed one as a new
generation with the same parameters; the API's cancel and retry; the job's steps."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from accounts.models import User
from billing.models import Account, EntryKind, Hold, HoldStatus, LedgerEntry
from inference.errors import GenerationAlreadyPaidError, GenerationFinishedError
from inference.models import AdmittedImage, Generation, GenerationStatus
from inference.selectors import generation_queue_position, generation_steps
from inference.services import (
    ALREADY_PAID_MESSAGE,
    generation_cancel_by_owner,
    generation_create,
    generation_retry,
    generation_run,
)
from inference.services.owner_actions import CANCELED_MESSAGE
from inference.services.transitions import generation_fail
from tests.helpers import wait_for
from tests.inference.paying_user import CREDIT, HOLD_MICROS, ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl

DISCOVER = "/signer/discover-orchestrators"
PAYMENT = "/signer/generate-live-payment"


def _queued(user: User, **fields: Any) -> Generation:
    arguments: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "fog",
        "width": 512,
        "height": 384,
        "seed": 7,
        **fields,
    }
    return generation_create(owner=user, enqueue=False, **arguments)


def _row(generation: Generation) -> Generation:
    return Generation.objects.get(pk=generation.pk)


def _available(user: User) -> int:
    return Account.objects.get(user_id=user.pk).available_micros


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- cancel -------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_while_queued_releases_the_hold_to_the_micro_and_nothing_reaches_the_network(
    sandbox: SandboxControl,
) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    assert _available(user) == CREDIT - HOLD_MICROS
    sandbox.clear_requests()

    canceled = generation_cancel_by_owner(generation_id=generation.pk, acting_user=user)

    assert (canceled.status, canceled.stage) == ("canceled", "done")
    assert canceled.error_message == CANCELED_MESSAGE
    assert canceled.finished_at is not None
    assert _available(user) == CREDIT  # every micro of the hold is back
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD, EntryKind.HOLD_RELEASE]
    release = LedgerEntry.objects.get(account_id=user.pk, kind=EntryKind.HOLD_RELEASE)
    assert release.amount_micros == HOLD_MICROS
    assert Hold.objects.get(generation_id=generation.pk).status == HoldStatus.RELEASED
    assert AdmittedImage.objects.get(generation_id=generation.pk).counts is False

    # The message that was on its way runs: it finds the row canceled and calls nobody.
    assert generation_run(generation_id=str(generation.pk)) is None
    assert sandbox.requests() == []
    assert _row(generation).status == GenerationStatus.CANCELED
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD, EntryKind.HOLD_RELEASE]


@pytest.mark.django_db(transaction=True)
def test_cancel_while_running_before_the_payment_means_no_ticket_is_ever_asked_for(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):  # provisioned at the sandbox
        user = pay_as_you_go_user()
    generation = _queued(user)
    sandbox.add_fault("GET", DISCOVER, delay=2, times=1)  # the run waits before its claim
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(generation_run(generation_id=str(generation.pk)))
        finally:
            connections.close_all()

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    wait_for(lambda: _row(generation).stage == "connecting")

    canceled = generation_cancel_by_owner(generation_id=generation.pk, acting_user=user)
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert outcome == [None]  # the run lost the row at its payment claim and stopped
    assert canceled.status == GenerationStatus.CANCELED
    row = _row(generation)
    assert (row.status, row.payment_claimed_at, row.tickets_paid) == ("canceled", None, 0)
    assert sandbox.requests(PAYMENT) == []  # no ticket after the cancel
    assert _available(user) == CREDIT
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD, EntryKind.HOLD_RELEASE]


@pytest.mark.django_db
def test_cancel_after_the_payment_is_refused_and_changes_nothing(sandbox: SandboxControl) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    # As the run leaves it at its claim (AttemptPaymentGuard.claim): running, paying, claimed.
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING,
        stage="paying",
        attempt_id="attempt-1",
        payment_claimed_at=generation.created_at,
    )
    before = Generation.objects.filter(pk=generation.pk).values().get()

    with pytest.raises(GenerationAlreadyPaidError) as refused:
        generation_cancel_by_owner(generation_id=generation.pk, acting_user=user)

    assert refused.value.code == "already_paid"
    assert refused.value.message == "Already paid for on the network; it can't be cancelled now"
    assert Generation.objects.filter(pk=generation.pk).values().get() == before
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD]
    assert Hold.objects.get(generation_id=generation.pk).status == HoldStatus.OPEN
    assert _available(user) == CREDIT - HOLD_MICROS


@pytest.mark.django_db
def test_cancel_of_a_finished_generation_is_refused(sandbox: SandboxControl) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    generation_fail(generation_id=generation.pk, code="upstream_failed")
    kinds = ledger_kinds(user)

    with pytest.raises(GenerationFinishedError):
        generation_cancel_by_owner(generation_id=generation.pk, acting_user=user)

    assert _row(generation).status == GenerationStatus.FAILED
    assert ledger_kinds(user) == kinds


@pytest.mark.django_db
def test_another_users_generation_cannot_be_canceled(sandbox: SandboxControl) -> None:
    owner, other = pay_as_you_go_user(), pay_as_you_go_user()
    generation = _queued(owner)

    with pytest.raises(Generation.DoesNotExist):
        generation_cancel_by_owner(generation_id=generation.pk, acting_user=other)

    assert _row(generation).status == GenerationStatus.QUEUED
    response = _client(other).post(f"/api/v1/generations/{generation.pk}/cancel")
    assert response.status_code == 404
    assert _row(generation).status == GenerationStatus.QUEUED


# --- the API -------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_cancel_answers_the_canceled_generation_then_409_finished(
    sandbox: SandboxControl,
) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    client = _client(user)

    response = client.post(f"/api/v1/generations/{generation.pk}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["can_cancel"], body["can_retry"]) == ("canceled", False, True)
    assert body["steps"][-1] == {
        "stage": "done",
        "label": "Canceled",
        "state": "failed",
        "at": body["finished_at"],
    }
    again = client.post(f"/api/v1/generations/{generation.pk}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "finished"
    assert _available(user) == CREDIT


@pytest.mark.django_db
def test_api_cancel_after_payment_is_a_409_already_paid(sandbox: SandboxControl) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING,
        stage="generating",
        payment_claimed_at=generation.created_at,
    )
    client = _client(user)

    shown = client.get(f"/api/v1/generations/{generation.pk}").json()
    response = client.post(f"/api/v1/generations/{generation.pk}/cancel")

    assert (shown["can_cancel"], shown["cancel_refusal"]) == (False, ALREADY_PAID_MESSAGE)
    assert response.status_code == 409
    assert response.json() == {"detail": ALREADY_PAID_MESSAGE, "code": "already_paid"}
    assert _row(generation).status == GenerationStatus.RUNNING
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD]


@pytest.mark.django_db
def test_api_retry_makes_one_new_generation_with_the_same_parameters_held_like_a_submit(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any
) -> None:
    user = pay_as_you_go_user()
    failed = _queued(user, model_id="black-forest-labs/FLUX.1-schnell")
    generation_fail(generation_id=failed.pk, code="upstream_failed")
    client = _client(user)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/api/v1/generations/{failed.pk}/retry")

    assert response.status_code == 201
    body = response.json()
    assert Generation.objects.filter(owner=user).count() == 2
    retried = Generation.objects.get(pk=body["id"])
    assert retried.pk != failed.pk
    assert (
        retried.prompt,
        retried.negative_prompt,
        retried.model_id,
        retried.width,
        retried.height,
        retried.seed,
        retried.status,
    ) == ("a lighthouse at dusk", "fog", "black-forest-labs/FLUX.1-schnell", 512, 384, 7, "queued")
    assert len(callbacks) == 1  # its run message, after commit, as for any submit
    # Admitted as any submission: its own hold of the ceiling, the failed one's released.
    assert Hold.objects.get(generation_id=retried.pk).amount_micros == HOLD_MICROS
    assert _available(user) == CREDIT - HOLD_MICROS
    assert _row(failed).status == GenerationStatus.FAILED  # the failed one stays as it was


@pytest.mark.django_db
def test_retry_of_a_succeeded_or_queued_generation_is_a_409_and_makes_nothing(
    sandbox: SandboxControl,
) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    client = _client(user)

    response = client.post(f"/api/v1/generations/{generation.pk}/retry")

    assert response.status_code == 409
    assert response.json()["code"] == "not_retryable"
    assert Generation.objects.filter(owner=user).count() == 1
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD]


@pytest.mark.django_db
def test_retry_service_refuses_another_users_generation(sandbox: SandboxControl) -> None:
    owner, other = pay_as_you_go_user(), pay_as_you_go_user()
    failed = _queued(owner)
    generation_fail(generation_id=failed.pk, code="upstream_failed")

    with pytest.raises(Generation.DoesNotExist):
        generation_retry(generation=_row(failed), acting_user=other)

    assert Generation.objects.count() == 1


@pytest.mark.django_db
def test_the_web_cancel_and_retry_buttons(sandbox: SandboxControl) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    client = _client(user)

    page = client.get(reverse("inference:detail", args=[generation.pk])).content.decode()
    assert f'action="/generations/{generation.pk}/cancel/"' in page
    assert "data-cancel>Cancel</button>" in page  # enabled: nothing paid
    assert "data-retry" not in page

    response = client.post(reverse("inference:cancel", args=[generation.pk]))
    assert response.status_code == 302
    assert _row(generation).status == GenerationStatus.CANCELED

    page = client.get(reverse("inference:detail", args=[generation.pk])).content.decode()
    assert "data-cancel" not in page
    assert "data-retry" in page
    response = client.post(reverse("inference:retry", args=[generation.pk]))
    new = Generation.objects.exclude(pk=generation.pk).get(owner=user)
    assert response["Location"] == reverse("inference:detail", args=[new.pk])


@pytest.mark.django_db
def test_a_paid_running_generation_shows_a_disabled_cancel_that_says_why(
    sandbox: SandboxControl,
) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING,
        stage="generating",
        payment_claimed_at=generation.created_at,
    )

    page = _client(user).get(reverse("inference:detail", args=[generation.pk])).content.decode()

    assert 'data-cancel disabled aria-describedby="cancel-refusal">Cancel</button>' in page
    assert (
        '<p class="muted small" id="cancel-refusal" data-cancel-refusal data-message="'
        'Already paid for on the network; it can&#x27;t be cancelled now">'
        "Already paid for on the network; it can&#x27;t be cancelled now</p>"
    ) in page


# --- what the page watches -------------------------------------------------------------


@pytest.mark.django_db
def test_queue_position_counts_everyones_queued_generations_ahead(sandbox: SandboxControl) -> None:
    first_user, second_user = pay_as_you_go_user(), pay_as_you_go_user()
    first = _queued(first_user)
    second = _queued(second_user)
    third = _queued(first_user)
    Generation.objects.filter(pk=first.pk).update(status=GenerationStatus.RUNNING)

    assert generation_queue_position(generation=_row(first)) is None
    assert generation_queue_position(generation=_row(second)) == 1
    assert generation_queue_position(generation=_row(third)) == 2
    body = _client(first_user).get(f"/api/v1/generations/{third.pk}").json()
    assert body["queue_position"] == 2


@pytest.mark.django_db
def test_steps_of_a_queued_and_a_succeeded_generation(sandbox: SandboxControl) -> None:
    user = pay_as_you_go_user()
    generation = _queued(user)

    queued = [(s.stage, s.state) for s in generation_steps(generation=_row(generation))]
    assert queued == [
        ("queued", "current"),
        ("authorizing", "todo"),
        ("connecting", "todo"),
        ("paying", "todo"),
        ("generating", "todo"),
        ("saving", "todo"),
        ("done", "todo"),
    ]
    Generation.objects.filter(pk=generation.pk).update(stage="paying", status="running")
    running = [s.state for s in generation_steps(generation=_row(generation))]
    assert running == ["done", "done", "done", "current", "todo", "todo", "todo"]
