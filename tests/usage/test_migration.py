"""The move of the usage mirror from billing to usage migrates an existing database in
place: the rows written under main's migrations are read by the usage models after."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_celery_beat.models import PeriodicTask

from usage.models import UsageDay, UsageManifest, UsageSyncState, UsageUserAggregate

BEFORE = [("billing", "0008_observed_price"), ("usage", None)]


def _migrate(targets: list[tuple[str, str | None]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.migrate(targets).apps


@pytest.mark.django_db(transaction=True)
def test_an_existing_database_migrates_in_place() -> None:
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    # The database as main left it: the mirror's models in billing, with rows.
    aggregate_model = old.get_model("billing", "UsageUserAggregate")
    manifest_model = old.get_model("billing", "UsageManifest")
    old.get_model("billing", "UsageSyncState").objects.create(pk=1, status="ok", fee_wei=10**40)
    aggregate_model.objects.create(
        external_user_id="ext-1",
        request_count=3,
        network_fee_usd_micros=2**200,
        fee_wei=7,
        synced_at=datetime(2026, 11, 1, tzinfo=UTC),
        email="old@example.com",
    )
    manifest_model.objects.create(
        external_user_id="ext-1",
        manifest_id="m-1",
        fee_wei=2**255,
        network_fee_usd_micros=1,
        day=date(2026, 11, 1),
        first_seen_at=datetime(2026, 11, 1, tzinfo=UTC),
    )
    old.get_model("billing", "UsageDay").objects.create(day=date(2026, 11, 1), fee_wei=5)
    ContentType.objects.filter(app_label="usage").delete()
    ContentType.objects.get_or_create(app_label="billing", model="usagemanifest")
    PeriodicTask.objects.filter(name__in=["usage-sync", "billing-usage-sync"]).delete()
    interval = old.get_model("django_celery_beat", "IntervalSchedule").objects.create(
        every=300, period="seconds"
    )
    old.get_model("django_celery_beat", "PeriodicTask").objects.create(
        name="billing-usage-sync", task="billing.tasks.usage_sync_task", interval=interval
    )

    _migrate(leaves)

    state = UsageSyncState.objects.get(pk=1)
    assert (state.status, state.fee_wei) == ("ok", 10**40)
    row = UsageUserAggregate.objects.get()
    assert (row.external_user_id, row.network_fee_usd_micros, row.email) == (
        "ext-1",
        2**200,
        "old@example.com",
    )
    assert UsageManifest.objects.get().fee_wei == 2**255
    assert UsageDay.objects.get().fee_wei == 5
    # Same tables: nothing copied, nothing left behind under another name.
    assert UsageManifest._meta.db_table == "billing_usagemanifest"
    assert ContentType.objects.filter(app_label="billing", model="usagemanifest").count() == 0
    assert ContentType.objects.filter(app_label="usage", model="usagemanifest").count() == 1
    task = PeriodicTask.objects.get(task="usage.tasks.usage_sync_task")
    assert task.name == "usage-sync"
    assert not PeriodicTask.objects.filter(task="billing.tasks.usage_sync_task").exists()
