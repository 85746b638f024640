"""Drift (issue 13): alerts only where a charge was expected; a fee difference (wei) kept
apart from a rate difference (USD), with exact values, through a real sync run."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.test import Client

from billing.models import Hold, LedgerEntry, Plan
from billing.services import account_change_plan, credit_grant, plans_seed
from inference.models import Generation
from tests.billing.conftest import admit_generation, charge_at_payment
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from usage.models import UsageDrift
from usage.services.sync import usage_sync_run, usage_sync_state

pytestmark = pytest.mark.django_db

#: 0.000001 ETH: $0.003 (3,000 µ$) at the configured $3,000/ETH, well under an image's hold.
FEE = 10**12


def _row(ext: str, manifest: str, fee_wei: int, usd: int) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": str(usd),
        "requests": 1,
    }


def _user_on(slug: str) -> Any:
    plans_seed()
    owner = UserFactory()
    account_change_plan(user=owner, plan=Plan.objects.get(slug=slug), acting_user=None, reason="t")
    if slug == "pay-as-you-go":
        credit_grant(
            user=owner, amount_micros=10**12, reason="t", acting_user=None, idempotency_key="g"
        )
    return owner


def _image(owner: Any, manifest_id: str, *, charged_fee_wei: int | None = None) -> Generation:
    """An image admitted now (a hold on pay-as-you-go), charged at payment if asked."""
    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
            height=512, manifest_id=manifest_id, expected_fee_wei=charged_fee_wei,
        )  # fmt: skip
        admit_generation(generation)
        if charged_fee_wei is not None:
            charge_at_payment(generation_id=generation.pk, expected_fee_wei=charged_fee_wei)
    return generation


def test_a_free_plan_users_metered_image_is_drift_without_an_alert(
    sandbox: SandboxControl,
) -> None:
    owner = _user_on("free")
    generation = _image(owner, "sess-free")
    assert not Hold.objects.filter(generation_id=generation.pk).exists()
    sandbox.seed_usage([_row(owner.external_user_id, "sess-free", FEE, 3_000)])
    usage_sync_run()
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.local_debit_wei, drift.metered_fee_wei) == (0, FEE)
    assert (drift.local_usd_micros, drift.metered_usd_micros) == (0, 3_000)
    assert (drift.fee_diff_wei, drift.rate_diff_usd_micros) == (FEE, 0)
    assert drift.alert is False  # no hold that day: the operator's cost, not an alert
    assert usage_sync_state().drift_alerts == 0


def test_a_pay_as_you_go_users_unsettled_paid_image_is_an_alert(
    sandbox: SandboxControl,
) -> None:
    owner = _user_on("pay-as-you-go")
    # Admitted with a hold; its payment session is metered before our charge is recorded
    # (the generation does not name the manifest yet, so the mirror cannot settle it).
    generation = _image(owner, "")
    assert Hold.objects.filter(generation_id=generation.pk, account_id=owner.pk).exists()
    sandbox.seed_usage([_row(owner.external_user_id, "sess-paid", FEE, 3_000)])
    usage_sync_run()
    assert not LedgerEntry.objects.filter(kind="usage_debit").exists()
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.local_debit_wei, drift.fee_diff_wei, drift.rate_diff_usd_micros) == (
        0,
        FEE,
        0,
    )
    assert drift.alert is True
    assert usage_sync_state().drift_alerts == 1


def test_a_pure_fee_difference(sandbox: SandboxControl) -> None:
    # We charged 10**12 wei at $3,000/ETH ($0.003); the network metered twice the wei at
    # the same rate ($0.006): a fee difference of 10**12 wei, no rate difference, an alert.
    owner = _user_on("pay-as-you-go")
    _image(owner, "sess-fee", charged_fee_wei=FEE)
    debit = LedgerEntry.objects.get(kind="usage_debit")
    assert (debit.network_fee_wei, debit.eth_usd_rate) == (FEE, "3000")
    sandbox.seed_usage([_row(owner.external_user_id, "sess-fee", 2 * FEE, 6_000)])
    usage_sync_run()
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.local_debit_wei, drift.local_usd_micros) == (FEE, 3_000)
    assert (drift.metered_fee_wei, drift.metered_usd_micros) == (2 * FEE, 6_000)
    assert (drift.fee_diff_wei, drift.rate_diff_usd_micros) == (FEE, 0)
    assert drift.alert is True


def test_a_pure_rate_difference_shown_on_the_staff_page(sandbox: SandboxControl) -> None:
    # The same 10**12 wei, metered at $3,100/ETH ($0.0031) while we converted it at
    # $3,000/ETH ($0.003): no fee difference, a rate difference of +100 µ$, no alert.
    owner = _user_on("pay-as-you-go")
    _image(owner, "sess-rate", charged_fee_wei=FEE)
    sandbox.seed_usage([_row(owner.external_user_id, "sess-rate", FEE, 3_100)])
    usage_sync_run()
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.local_debit_wei, drift.local_usd_micros) == (FEE, 3_000)
    assert (drift.metered_fee_wei, drift.metered_usd_micros) == (FEE, 3_100)
    assert (drift.fee_diff_wei, drift.rate_diff_usd_micros) == (0, 100)
    assert drift.alert is False

    client = Client()
    client.force_login(billing_staff())
    page = client.get("/staff/billing/").content.decode()
    table = page.split('id="drift-heading"', 1)[1].split("</table>", 1)[0]
    table = table.replace("<wbr>", "")  # long figures may wrap between digit groups
    assert 'data-fee-diff-wei="0"><span>0 ETH</span></td>' in table
    assert 'data-rate-diff-usd-micros="100"><span>+$0.0001</span></td>' in table
    assert '"Debited (USD)"><span>$0.003</span></td>' in table
    assert '"Metered (USD)"><span>$0.0031</span></td>' in table


def test_a_negative_rate_difference_is_stored_signed(sandbox: SandboxControl) -> None:
    # Metered at $2,900/ETH: pymthouse converted the same wei to 100 µ$ less than we did.
    owner = _user_on("pay-as-you-go")
    _image(owner, "sess-low", charged_fee_wei=FEE)
    sandbox.seed_usage([_row(owner.external_user_id, "sess-low", FEE, 2_900)])
    usage_sync_run()
    drift = UsageDrift.objects.get(external_user_id=owner.external_user_id)
    assert (drift.fee_diff_wei, drift.rate_diff_usd_micros) == (0, -100)
    assert UsageDrift.objects.filter(rate_diff_usd_micros=-100).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_migration_recomputes_existing_drift_by_the_new_rule() -> None:
    from datetime import UTC, datetime

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    free = _user_on("free")
    paid = _user_on("pay-as-you-go")
    _image(free, "sess-free")
    _image(paid, "sess-paid", charged_fee_wei=FEE)  # a hold and a debit at $3,000/ETH
    today = Generation.objects.filter(owner=paid).get().created_at.date()
    executor = MigrationExecutor(connection)
    old = executor.migrate([("usage", "0002_quarantine")]).apps
    manifest = old.get_model("usage", "UsageManifest")
    drift = old.get_model("usage", "UsageDrift")
    seen = datetime.now(UTC)
    for owner, manifest_id, fee, usd in (
        (free, "m-free", FEE, 3_000),
        (paid, "m-paid", FEE, 3_100),
    ):
        manifest.objects.create(
            external_user_id=owner.external_user_id, manifest_id=manifest_id, fee_wei=fee,
            network_fee_usd_micros=usd, day=today, first_seen_at=seen,
        )  # fmt: skip
    # As the old rule wrote them: the free user's metered image was an alert.
    drift.objects.create(
        external_user_id=free.external_user_id, day=today, local_debit_wei=0,
        metered_fee_wei=FEE, alert=True, computed_at=seen,
    )  # fmt: skip
    drift.objects.create(
        external_user_id=paid.external_user_id, day=today, local_debit_wei=FEE,
        metered_fee_wei=FEE, alert=False, computed_at=seen,
    )  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(leaves)
    rows = {
        row.external_user_id: row
        for row in UsageDrift.objects.filter(day=today)
    }  # fmt: skip
    free_row, paid_row = rows[free.external_user_id], rows[paid.external_user_id]
    assert (free_row.alert, free_row.fee_diff_wei, free_row.metered_usd_micros) == (
        False,
        FEE,
        3_000,
    )
    assert (paid_row.local_usd_micros, paid_row.metered_usd_micros) == (3_000, 3_100)
    assert (paid_row.fee_diff_wei, paid_row.rate_diff_usd_micros, paid_row.alert) == (0, 100, False)
