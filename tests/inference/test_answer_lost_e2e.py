"""Ticket issued, answer lost: the signer paid, our client never heard (issue 15 §14).

Through a real worker against the sandbox's ``answerLost`` faults: the signer issues
the ticket (one usage event on the manifest paid for, as a real 200 records), then its
answer is stalled past our signer read timeout or the connection is dropped. The
product's rule (``inference/services/run.py``, docs/reliability.md): a timeout or a drop
after sending is ``outcome_unknown``; the payment claim is kept, so the generation is
never paid again, and billing keeps the credit hold to resolve it from usage.
"""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import EntryKind, Hold, HoldStatus
from inference.models import Generation, GenerationStatus
from inference.services import FAILURE_MESSAGES, generation_create, generations_reconcile
from inference.tasks import generation_run_task
from tests.billing.conftest import account_of
from tests.helpers import wait_for
from tests.inference.paying_user import CREDIT, HOLD_MICROS, ledger_kinds, pay_as_you_go_user
from tests.integrations.livepeer.conftest import RUNNER_1
from tests.sandbox_server import SandboxControl
from tests.worker import running_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PAYMENT = "/signer/generate-live-payment"
SIGNER_READ_TIMEOUT = 1.0  # the worker's LIVEPEER_SIGNER_READ_TIMEOUT


def _finished(generation: Generation) -> Generation:
    wait_for(lambda: Generation.objects.get(pk=generation.pk).is_finished, timeout=30)
    return Generation.objects.get(pk=generation.pk)


@pytest.mark.parametrize(
    ("kind", "delay"),
    [("stall", SIGNER_READ_TIMEOUT + 2.0), ("drop", None)],
    ids=["stalled-past-the-read-timeout", "dropped-after-the-ticket"],
)
def test_ticket_issued_answer_lost_ends_outcome_unknown_without_a_second_ticket(
    sandbox: SandboxControl, transactional_db: Any, kind: str, delay: float | None
) -> None:
    user = pay_as_you_go_user()
    fault_id = sandbox.add_fault("POST", PAYMENT, answer_lost=kind, delay=delay, times=1)

    with running_worker(
        name=f"answer-lost-{kind}",
        env={"LIVEPEER_SIGNER_READ_TIMEOUT": str(SIGNER_READ_TIMEOUT)},
    ) as worker:
        generation = _finished(
            generation_create(
                owner=user, prompt="a lighthouse at dusk", width=512, height=384, seed=7
            )
        )
        # The same message redelivered (it resumes its own attempt) and a reconcile
        # sweep change nothing: no second ticket.
        attempt_id = generation.attempt_id
        generation_run_task.apply_async((str(generation.pk),), task_id=attempt_id)
        wait_for(lambda: f"[{attempt_id}] succeeded" in worker.log(), timeout=30)
        assert generations_reconcile() == {"requeued": 0, "interrupted": 0}

    generation = Generation.objects.get(pk=generation.pk)
    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "outcome_unknown",
    )
    assert generation.error_message == FAILURE_MESSAGES["outcome_unknown"]
    assert generation.payment_claimed_at is not None  # the claim is kept
    assert generation.tickets_paid == 0  # our client never saw the 200
    assert not generation.image
    # The sandbox issued exactly one ticket, on the manifest the claim names.
    [event] = sandbox.events()
    assert (event["source"], event["manifestId"], event["externalUserId"]) == (
        "signer",
        generation.manifest_id,
        user.external_user_id,
    )
    [payment] = sandbox.requests(PAYMENT)  # asked once, never again
    assert (payment["faultId"], payment["status"], payment["answerLost"]) == (
        fault_id,
        200,
        kind,
    )
    assert [r["status"] for r in sandbox.requests(RUNNER_1)] == [402]  # never called paid
    # Billing keeps the hold open for the usage record to settle; nothing charged yet.
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.status, hold.charged_micros) == (HoldStatus.OPEN, None)
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (CREDIT, hold.amount_micros)
    assert hold.amount_micros == HOLD_MICROS
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD]  # no release, no debit
