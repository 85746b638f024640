"""inference.0008 backfills the admission record from existing generations by the rule
the allowance count used before, so no existing user's count changes."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import User
from inference.models import AdmittedImage
from inference.selectors import generations_counted_this_month


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.migrate(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_backfill_counts_what_the_live_rows_counted() -> None:
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    user = User.objects.create(email="backfill@example.com")
    old = _migrate([("inference", "0005_stale_hold_sweep_moves_to_inference")])
    generation = old.get_model("inference", "Generation")
    now = timezone.now()
    rows = {
        "succeeded": dict(status="succeeded", payment_claimed_at=now),
        "queued": dict(status="queued"),
        "failed-unpaid": dict(status="failed"),
        "canceled": dict(status="canceled"),
        "failed-paid": dict(status="failed", payment_claimed_at=now, error_code="outcome_unknown"),
    }
    made = {
        name: generation.objects.create(
            owner_id=user.pk, prompt=name, model_id="m", width=512, height=512, **fields
        )
        for name, fields in rows.items()
    }

    _migrate(leaves)

    counts = dict(AdmittedImage.objects.values_list("generation_id", "counts"))
    assert counts == {
        made["succeeded"].pk: True,
        made["queued"].pk: True,
        made["failed-unpaid"].pk: False,
        made["canceled"].pk: False,
        made["failed-paid"].pk: True,
    }
    assert generations_counted_this_month(owner_id=user.pk) == 3
    record = AdmittedImage.objects.get(generation_id=made["queued"].pk)
    assert (record.owner_id, record.admitted_at) == (user.pk, made["queued"].created_at)
