"""Billing wired into generation: admission, holds, charges, through the real paths."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client

from accounts.models import User
from billing.models import (
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    ObservedPrice,
    Plan,
)
from billing.services import account_change_plan, credit_grant
from inference.errors import GenerationAdmissionRefusedError
from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from tests.billing.conftest import (
    account_of,
    assert_ledger_matches,
    charge_at_payment,
    charge_micros,
)
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.worker import WorkerProcess

ESTIMATE = 5_000_000_000_000
HOLD = 18_000  # the estimate at $3,000/ETH ($0.015) × 6/5, in USD micros


def _usage_user(email: str, credit: int) -> User:
    user = User.objects.create(email=email)
    account_change_plan(
        user=user, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="test"
    )
    if credit:
        credit_grant(user=user, amount_micros=credit, reason="test credit", acting_user=None,
                     idempotency_key=f"credit-{email}")  # fmt: skip
    return user


@pytest.mark.django_db
def test_out_of_credit_is_402_with_no_row_no_task_and_no_upstream_call(
    sandbox: SandboxControl, client: Client
) -> None:
    user = _usage_user("broke@example.com", HOLD - 1)
    sandbox.clear_requests()
    client.force_login(user)
    response = client.post(
        "/api/v1/generations",
        {"prompt": "a lighthouse", "width": 512, "height": 512},
        content_type="application/json",
    )
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_credit"
    assert "out of credit" in response.json()["detail"]
    page = client.post("/generate/", {"prompt": "a lighthouse", "size": "512x512"})
    assert page.status_code == 402
    assert "out of credit" in page.content.decode()
    assert not Generation.objects.exists()
    assert not Hold.objects.exists()
    assert sandbox.requests() == []  # no token, no signer, no runner call
    assert account_of(user).balance_micros == HOLD - 1


@pytest.mark.django_db
def test_a_generation_failing_before_payment_releases_its_hold(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any
) -> None:
    user = _usage_user("fails@example.com", 10**20)
    sandbox.add_fault("POST", "/signer/generate-live-payment", status=400,
                      body={"error": {"message": "bad request"}})  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):  # the task runs eagerly
        generation = generation_create(owner=user, prompt="a lighthouse", width=512, height=512)
    generation.refresh_from_db()
    assert generation.status == GenerationStatus.FAILED
    assert generation.payment_claimed_at is None
    hold = Hold.objects.get(generation_id=generation.pk)
    assert hold.status == HoldStatus.RELEASED
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (10**20, 0)
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).exists()
    assert_ledger_matches(user)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_generation_through_a_real_worker_debits_exactly_its_expected_fee(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    user = _usage_user("payer@example.com", 10**20)
    generation = generation_create(
        owner=user, prompt="a lighthouse at dusk", width=512, height=384, seed=7
    )
    assert account_of(user).held_micros == HOLD  # no price observed yet: the estimate
    wait_for(lambda: Generation.objects.get(pk=generation.pk).is_finished, timeout=30)
    generation.refresh_from_db()
    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    fee = generation.expected_fee_wei
    assert fee is not None
    assert fee == generation.price_wei * generation.units_paid  # the runner's real price
    (event,) = [e for e in sandbox.events() if e["manifestId"] == generation.manifest_id]
    assert int(event["feeWei"]) == fee  # what the network metered for this payment
    charge = charge_micros(fee)
    assert (fee, charge) == (4_768_371_000_000, 17_167)  # $0.014305113 × 6/5 → $0.017167
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert (debit.amount_micros, debit.generation_id) == (charge, generation.pk)
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (10**20 - charge, 0)
    assert_ledger_matches(user)
    # The next hold uses the observed price × the maxPrice markup (per unit, rounded up).
    second = generation_create(owner=user, prompt="again", width=512, height=384, seed=8,
                               enqueue=False)  # fmt: skip
    per_unit_max = -((-generation.price_wei * 1012) // 1000)
    second_hold = Hold.objects.get(generation_id=second.pk)
    assert second_hold.max_fee_wei == per_unit_max * generation.units_paid
    assert second_hold.amount_micros == charge_micros(per_unit_max * generation.units_paid)
    assert second_hold.amount_micros == 17_373  # 4,825,591,452,000 wei → $0.0173721292…


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submissions_with_credit_for_three_admit_exactly_three(
    settings: Any,
) -> None:
    assert not ObservedPrice.objects.exists()  # no runner price observed: holds use the estimate
    settings.INFERENCE_RATE_LIMIT_COUNT = 100
    settings.INFERENCE_MAX_ACTIVE_PER_USER = 100
    user = _usage_user("rush@example.com", 4 * HOLD - 1)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait()
            generation_create(owner=user, prompt="rush", width=512, height=512, enqueue=False)
            result = "admitted"
        except GenerationAdmissionRefusedError as exc:
            result = exc.code
        except Exception as exc:
            result = repr(exc)
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["admitted"] * 3 + ["insufficient_credit"] * 17
    assert Generation.objects.filter(owner=user).count() == 3
    assert account_of(user).held_micros == 3 * HOLD
    assert_ledger_matches(user)


@pytest.mark.django_db(transaction=True)
def test_a_settling_payment_and_a_new_submission_of_one_owner_do_not_deadlock(
    settings: Any,
) -> None:
    """Settlement locks the account and, at COMMIT, checks foreign keys to the user (FOR KEY
    SHARE, deferred by Django); admission locks the user, then waits for the account. The
    admission lock must not block those checks. Found by the Postgres bench (deadlocks)."""
    settings.INFERENCE_RATE_LIMIT_COUNT = 100
    user = _usage_user("busy@example.com", 10 * HOLD)
    first = generation_create(owner=user, prompt="first", width=512, height=512, enqueue=False)
    Generation.objects.filter(pk=first.pk).update(
        price_wei=ESTIMATE, price_unit="fixed", units_paid=1, expected_fee_wei=ESTIMATE
    )
    settling = threading.Event()
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            settling.wait(10)
            second = generation_create(
                owner=user, prompt="second", width=512, height=512, enqueue=False
            )
            outcome["second"] = second.pk
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=submit)
    thread.start()
    with transaction.atomic():
        charge_at_payment(generation_id=first.pk, expected_fee_wei=ESTIMATE)
        settling.set()
        time.sleep(1.0)  # the submission now waits for the account this settle holds
    thread.join(30)
    assert "error" not in outcome, outcome
    assert Hold.objects.get(generation_id=outcome["second"]).status == HoldStatus.OPEN
    assert Hold.objects.get(generation_id=first.pk).status == HoldStatus.SETTLED
    assert_ledger_matches(user)
