"""The usage sync and a paid image's charge, as two real transactions on PostgreSQL.

Both take the generation row before the account row. Before, the sync settled one
generation (locking the account) and then wrote the metered cost of the next one, while
a confirm held that generation and waited for the account: a deadlock, and a confirm
that lost it left a paid image unrecorded but charged by the sync. Since issue 16 the
confirm is one UPDATE committed before the paid call and the charge is made in the
success write's transaction (the generation row, then the account): that transaction
is the one raced here. ``tests/usage/test_charge_once.py`` runs a sync during the paid
call itself (both backends).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from billing.models import Account, Hold, HoldStatus, LedgerEntry, Plan
from billing.services import account_change_plan, credit_grant, plans_seed
from billing.transactions import is_deadlock
from inference.models import Generation, GenerationStatus
from inference.services import transitions
from inference.services.transitions import AttemptPaymentGuard
from integrations.livepeer import GeneratedImage, InferenceResult, PaymentRecord
from tests.billing.conftest import admit_generation
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from usage.services.sync import usage_sync_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="row locks and deadlocks need PostgreSQL"
    ),
]


# The smallest valid PNG header the image field needs (1×1), as the runner returns.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def _row(ext: str, manifest: str, fee_wei: int) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": "1",
        "requests": 1,
    }


def _generation(owner: Any, manifest_id: str) -> Generation:
    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
            height=512, manifest_id=manifest_id,
        )  # fmt: skip
        admit_generation(generation)
    return generation


def _waiting_on_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        (count,) = cursor.fetchone()
    return bool(count)


def test_the_sync_and_a_confirm_take_the_same_lock_order(
    sandbox: SandboxControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans_seed()
    owner = UserFactory()
    account_change_plan(
        user=owner, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="t"
    )
    credit_grant(
        user=owner, amount_micros=10**30, reason="t", acting_user=None, idempotency_key="g"
    )
    # A: its outcome was unknown, the sync settles it. B: paid, its confirm is under way.
    unknown = _generation(owner, "sess-a")
    Generation.objects.filter(pk=unknown.pk).update(
        status=GenerationStatus.FAILED, error_code="outcome_unknown",
        payment_claimed_at=timezone.now(),
    )  # fmt: skip
    paid = _generation(owner, "sess-b")
    Generation.objects.filter(pk=paid.pk).update(
        status=GenerationStatus.RUNNING, attempt_id="att-b", payment_claimed_at=timezone.now()
    )
    sandbox.seed_usage(
        [_row(owner.external_user_id, "sess-a", 700), _row(owner.external_user_id, "sess-b", 900)]
    )

    generation_row_held = threading.Event()
    real_settle = transitions.generation_charge_settle

    def settle_once_the_sync_waits(**kwargs: Any) -> None:
        # The success write holds B's row (its UPDATE ran); let the sync run into it first.
        generation_row_held.set()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        real_settle(**kwargs)

    monkeypatch.setattr(transitions, "generation_charge_settle", settle_once_the_sync_waits)
    errors: list[BaseException] = []
    runs: list[Any] = []

    def confirm() -> None:
        try:
            guard = AttemptPaymentGuard(
                generation_id=paid.pk, attempt_id="att-b", owner_id=paid.owner_id,
                model_id=paid.model_id,
            )  # fmt: skip
            guard.confirm(
                PaymentRecord(
                    manifest_id="sess-b", runner_url="http://runner.test", price_wei=900,
                    price_unit="fixed", units_paid=1, expected_fee_wei=900,
                )
            )  # fmt: skip
            # The paid call answered: the success write charges the confirmed payment.
            transitions.attempt_succeed(
                generation=Generation.objects.get(pk=paid.pk), attempt_id="att-b",
                result=InferenceResult(
                    images=(GeneratedImage(content=PNG, content_type="image/png", seed=1,
                                           nsfw=False),),
                    runner_url="http://runner.test", manifest_id="sess-b",
                    upstream_request_id="req-b", tickets_paid=1,
                ),
                guard=guard,
            )  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def sync() -> None:
        try:
            generation_row_held.wait(10)
            runs.append(usage_sync_run())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=confirm), threading.Thread(target=sync)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [is_deadlock(error) for error in errors] == []
    assert errors == []
    assert runs[0].status == "ok"
    # The paid image is recorded and charged once, at its runner fee.
    paid.refresh_from_db()
    assert (paid.tickets_paid, paid.expected_fee_wei, paid.cost_wei) == (1, 900, 900)
    assert paid.status == GenerationStatus.SUCCEEDED
    debits = dict(
        LedgerEntry.objects.filter(kind="usage_debit").values_list("generation_id", "amount_micros")
    )
    # × 6/5 each, once, in USD micros rounded up: A at the rate its manifest was metered at
    # (1 µ$ for 700 wei → 1.2 → 2), B at the configured $3,000/ETH (900 wei → 1).
    assert debits == {unknown.pk: 2, paid.pk: 1}
    assert set(Hold.objects.values_list("status", flat=True)) == {HoldStatus.SETTLED}
    account = Account.objects.get(pk=owner.pk)
    assert (account.balance_micros, account.held_micros) == (10**30 - 2 - 1, 0)
