"""Every periodic job is declared once (settings.PERIODIC_JOBS) and seeded into beat's
database schedule, which an admin edit owns afterwards."""

from __future__ import annotations

import pytest
from celery import current_app
from django.conf import settings
from django.utils.module_loading import import_string
from django_celery_beat.models import PeriodicTask

from usage.services.schedule import periodic_jobs_seed

pytestmark = pytest.mark.django_db


def test_every_job_is_seeded_with_its_task_interval_and_expiry() -> None:
    seeded = {
        task.name: (task.task, task.interval.every, task.expire_seconds)
        for task in PeriodicTask.objects.select_related("interval")
    }
    assert seeded == {
        "inference-reconcile-generations": ("inference.tasks.generations_reconcile_task", 60, 50),
        "accounts-provision-pending-users": (
            "accounts.tasks.provision_pending_users_task",
            300,
            240,
        ),
        "billing-resolve-stale-holds": ("inference.tasks.holds_resolve_stale_task", 300, 240),
        "inference-purge-idempotency-keys": (
            "inference.tasks.idempotent_requests_purge_task",
            3600,
            3000,
        ),
        "billing-merchant-wallets": ("billing.tasks.merchant_wallets_refresh_task", 60, 50),
        "billing-expire-promotional-credit": ("billing.tasks.promotions_expire_task", 300, 240),
        "billing-apply-scheduled-plan-changes": (
            "billing.tasks.plan_changes_apply_due_task",
            300,
            240,
        ),
        "billing-renew-subscriptions": ("billing.tasks.subscription_renewals_task", 300, 240),
        "usage-sync": (
            "usage.tasks.usage_sync_task",
            settings.BILLING_USAGE_SYNC_INTERVAL_SECONDS,
            max(settings.BILLING_USAGE_SYNC_INTERVAL_SECONDS - 5, 5),
        ),
    }
    for job in settings.PERIODIC_JOBS.values():
        assert import_string(job["task"]).name == job["task"]


def test_the_seed_never_overwrites_an_admin_edit() -> None:
    PeriodicTask.objects.filter(name="usage-sync").update(enabled=False, expire_seconds=7)
    assert periodic_jobs_seed() == []
    task = PeriodicTask.objects.get(name="usage-sync")
    assert (task.enabled, task.expire_seconds) == (False, 7)
    PeriodicTask.objects.filter(name="billing-resolve-stale-holds").delete()
    assert periodic_jobs_seed() == ["billing-resolve-stale-holds"]
    assert PeriodicTask.objects.count() == len(settings.PERIODIC_JOBS) == 9


def test_jobs_are_declared_in_one_place_only() -> None:
    # No second schedule for the database scheduler to merge (and overwrite edits with),
    # and no shelve file setting (dead under the database scheduler).
    assert current_app.conf.beat_schedule == {}
    assert not hasattr(settings, "CELERY_BEAT_SCHEDULE")
    assert not hasattr(settings, "CELERY_BEAT_SCHEDULE_FILENAME")
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
