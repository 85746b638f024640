"""End to end: an image paid through the sandbox signer is metered, mirrored and shown."""

from __future__ import annotations

import pytest
from django.test import Client

from billing.models import Account, LedgerEntry, Plan
from billing.services import account_change_plan, credit_grant, plans_seed
from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from tests.billing.conftest import charge_micros
from tests.factories import UserFactory
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from tests.worker import WorkerProcess
from usage.models import UsageDrift, UsageManifest, UsageSyncStatus, UsageUserAggregate
from usage.services.sync import usage_sync_run, usage_sync_state

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_generated_image_shows_its_exact_metered_fee_after_a_sync(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.set_config(usageLagSeconds=3600)  # metering lags inference, as upstream
    user = UserFactory()
    plans_seed()
    account_change_plan(
        user=user, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="e2e"
    )
    credit_grant(
        user=user, amount_micros=10**30, reason="e2e", acting_user=None, idempotency_key="e"
    )
    created = generation_create(
        owner=user, prompt="a lighthouse at dusk", width=512, height=384, seed=7
    )
    wait_for(lambda: Generation.objects.get(pk=created.pk).is_finished, timeout=60)
    generation = Generation.objects.get(pk=created.pk)
    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    # What the signer metered for this payment session (the sandbox's own record).
    (event,) = [e for e in sandbox.events() if e["manifestId"] == generation.manifest_id]
    fee = int(event["feeWei"])
    assert fee > 0
    assert generation.expected_fee_wei == fee

    # Inside the lag nothing is visible yet: the mirror records nothing for the image.
    early = usage_sync_run()
    assert (early.status, early.users_seen, early.manifests_new) == ("ok", 0, 0)
    generation.refresh_from_db()
    assert generation.cost_wei is None
    sandbox.set_config(usageLagSeconds=0)  # the metering pipeline caught up
    late = usage_sync_run()
    assert (late.users_seen, late.users_changed, late.manifests_new) == (1, 1, 1)

    row = UsageManifest.objects.get()
    assert (row.external_user_id, row.manifest_id) == (
        user.external_user_id,
        generation.manifest_id,
    )
    assert (row.generation_id, row.fee_wei) == (generation.pk, fee)
    generation.refresh_from_db()
    assert generation.cost_wei == fee == generation.expected_fee_wei
    aggregate = UsageUserAggregate.objects.get(external_user_id=user.external_user_id)
    assert (aggregate.fee_wei, aggregate.request_count) == (fee, 1)
    assert usage_sync_state().status == UsageSyncStatus.OK

    # Ledger and mirror agree: the debit is the fee in USD (at $3,000/ETH) × 6/5, rounded
    # up once; the drift compares the network fee it recorded (wei) with the metered one.
    debit = LedgerEntry.objects.get(kind="usage_debit", generation_id=generation.pk)
    assert debit.amount_micros == charge_micros(fee)
    assert (debit.network_fee_wei, debit.eth_usd_rate) == (fee, "3000")
    assert Account.objects.get(pk=user.pk).balance_micros == 10**30 - debit.amount_micros
    drift = UsageDrift.objects.get(external_user_id=user.external_user_id)
    assert (drift.local_debit_wei, drift.metered_fee_wei) == (fee, fee)
    assert drift.alert is False

    owner_page = Client()
    owner_page.force_login(user)
    html = owner_page.get(f"/generations/{generation.pk}/").content.decode()
    assert f'data-expected-fee-wei="{fee}"' in html
    assert f'data-metered-fee-wei="{fee}"' in html

    staff = Client()
    staff.force_login(billing_staff())
    csv_text = b"".join(staff.get("/staff/billing/csv/").streaming_content).decode()
    assert f"{user.external_user_id},{user.email},1,{fee}," in csv_text
