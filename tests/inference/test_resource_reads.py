"""The generation resource reads the ledger only once a payment was claimed: before that
no charge or refund can exist (inference/resources.py, billing.selectors.generations_money)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.services import generation_charge_settle
from inference.models import Generation
from inference.resources import generation_out
from integrations.livepeer.types import PaymentRecord
from tests.billing.conftest import admit_generation, new_generation
from tests.inference.paying_user import HOLD_MICROS, pay_as_you_go_user

pytestmark = pytest.mark.django_db


def _tables_read(generation: Generation) -> tuple[list[str], dict[str, Any]]:
    with CaptureQueriesContext(connection) as queries:
        out = generation_out(generation)
    return [q["sql"].split(" FROM ")[1].split()[0].strip('"') for q in queries], out


def test_a_generation_before_its_payment_claim_reads_its_hold_only() -> None:
    usage_user = pay_as_you_go_user()
    generation = new_generation(usage_user)
    admit_generation(generation)

    tables, out = _tables_read(generation)

    assert tables.count("billing_hold") == 1
    assert "billing_ledgerentry" not in tables
    assert out["money"]["hold_status"] == "open"
    assert out["money"]["quoted_micros"] == str(HOLD_MICROS)
    assert out["money"]["charged_micros"] is None
    assert out["money"]["refunded_micros"] is None


def test_a_paid_generation_reads_its_charge() -> None:
    usage_user = pay_as_you_go_user()
    generation = new_generation(usage_user)
    admit_generation(generation)
    record = PaymentRecord(
        manifest_id="m-1", runner_url="http://runner", price_wei=4_768_371_000_000,
        price_unit="fixed", units_paid=1, expected_fee_wei=4_768_371_000_000,
    )  # fmt: skip
    generation_charge_settle(
        owner_id=usage_user.pk, generation_id=generation.pk, model_id=generation.model_id,
        record=record,
    )  # fmt: skip
    Generation.objects.filter(pk=generation.pk).update(
        payment_claimed_at=timezone.now(), tickets_paid=1
    )
    generation.refresh_from_db()

    tables, out = _tables_read(generation)

    assert tables.count("billing_hold") == 1
    assert tables.count("billing_ledgerentry") == 1
    assert out["money"]["hold_status"] == "settled"
    # 4,768,371,000,000 wei at $3,000/ETH × 6/5, rounded up to the micro
    assert out["money"]["charged_micros"] == "17167"
    assert out["money"]["charged"] == "$0.02"  # shown to the cent, rounded up
