"""A paid image is charged exactly once when the usage sync runs during its paid call.

The worker confirms the payment (one durable UPDATE) before the paid call and charges
it right after, in the success write's transaction (issue 16). The usage mirror meters
that payment as soon as the ticket is signed, so a sync can join the manifest to the
generation while the paid call is still running: it must leave the charge to the
worker (the generation is running with a confirmed payment), and so must the stale-hold
sweep. Both backends; the real worker against the sandbox over real HTTP.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from billing.models import Account, EntryKind, Hold, HoldStatus, LedgerEntry
from inference.models import Generation, GenerationStatus
from inference.services import generation_create, generation_run
from inference.services.reconcile import holds_resolve_stale
from tests.helpers import wait_for
from tests.inference.paying_user import CREDIT, pay_as_you_go_user
from tests.sandbox_server import SandboxControl
from usage.services.sync import usage_sync_run

pytestmark = pytest.mark.django_db(transaction=True)


def _debits(generation: Generation) -> list[int]:
    return list(
        LedgerEntry.objects.filter(
            generation_id=generation.pk, kind=EntryKind.USAGE_DEBIT
        ).values_list("amount_micros", flat=True)
    )


@override_settings(BILLING_STALE_HOLD_AFTER_SECONDS=0, BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS=0)
def test_a_sync_during_the_paid_call_leaves_the_charge_to_the_worker(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):  # provisioned at the sandbox
        owner = pay_as_you_go_user()
    sandbox.set_config(usageLagSeconds=0, runnerLatencySeconds=3)  # the paid call lasts 3 s
    generation = generation_create(
        owner=owner, prompt="a lighthouse", width=256, height=256, enqueue=False
    )
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(generation_run(generation_id=str(generation.pk)))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()

    # The payment is confirmed and the paid call is under way: the row says so.
    wait_for(lambda: Generation.objects.get(pk=generation.pk).tickets_paid == 1, timeout=20)
    in_flight = Generation.objects.get(pk=generation.pk)
    assert in_flight.status == GenerationStatus.RUNNING
    sync = usage_sync_run()
    # The metered manifest is joined (its cost recorded) but nothing is charged: the
    # worker charges it. The stale-hold sweep (every hold stale, every timeout passed)
    # leaves it too.
    assert sync.status == "ok"
    assert sync.settled == 0
    assert Generation.objects.get(pk=generation.pk).cost_wei is not None
    assert holds_resolve_stale(now=timezone.now() + timedelta(days=30)) == []
    assert _debits(generation) == []
    assert Hold.objects.get(generation_id=generation.pk).status == HoldStatus.OPEN
    still = Generation.objects.get(pk=generation.pk)
    assert (still.status, still.tickets_paid) == (GenerationStatus.RUNNING, 1)

    worker.join(timeout=60)
    assert not worker.is_alive()
    assert [type(result) for result in outcome] == [Generation]

    done = Generation.objects.get(pk=generation.pk)
    assert (done.status, done.tickets_paid) == (GenerationStatus.SUCCEEDED, 1)
    # Exactly one usage debit, at the runner's fee, and the hold released once.
    hold = Hold.objects.get(generation_id=generation.pk)
    debits = _debits(generation)
    assert len(debits) == 1
    assert debits == [hold.charged_micros]
    assert debits[0] > 0
    assert hold.status == HoldStatus.SETTLED
    kinds = sorted(
        LedgerEntry.objects.filter(generation_id=generation.pk).values_list("kind", flat=True)
    )
    assert kinds == sorted([EntryKind.HOLD, EntryKind.HOLD_RELEASE, EntryKind.USAGE_DEBIT])
    account = Account.objects.get(pk=owner.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT - debits[0], 0)

    # A later sync and sweep change nothing.
    assert usage_sync_run().settled == 0
    assert holds_resolve_stale(now=timezone.now() + timedelta(days=30)) == []
    assert _debits(generation) == debits
    account = Account.objects.get(pk=owner.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT - debits[0], 0)
