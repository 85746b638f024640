from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import ProvisioningStatus, User
from accounts.services import user_create, user_set_active, users_provision_pending
from accounts.tasks import PROVISION_MAX_RETRIES, provision_user_task
from tests.factories import UserFactory
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.worker import WorkerProcess

pytestmark = pytest.mark.django_db

USERS_PATH = "/api/v1/apps/app_b50c8e3d43c6d3641cae2e66/users"


def test_user_create_assigns_an_opaque_immutable_external_user_id(
    django_capture_on_commit_callbacks,
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        user = user_create(email="Ann@Example.com", password="pw-test-12345")

    assert re.fullmatch(r"usr_[0-9a-f]{32}", user.external_user_id)
    assert "@" not in user.external_user_id
    assert user.provisioning_status == ProvisioningStatus.PENDING
    assert user.email == "Ann@example.com"
    assert len(callbacks) == 1  # the provisioning task, only after commit

    user = User.objects.get(pk=user.pk)
    original = user.external_user_id
    user.external_user_id = "usr_changed"
    with pytest.raises(ValidationError):
        user.save()
    assert User.objects.get(pk=user.pk).external_user_id == original


def test_rolled_back_creation_enqueues_nothing(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    from django.db import transaction

    def create_then_fail() -> None:
        with transaction.atomic():
            user_create(email="gone@example.com", password="pw-test-12345")
            raise RuntimeError("roll back")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            create_then_fail()

    assert callbacks == []
    assert not User.objects.filter(email="gone@example.com").exists()
    assert sandbox.requests(USERS_PATH) == []


@pytest.mark.parametrize(
    "bad",
    ["alice@example.com", "owner:x", "user:x", "-leading", "", "a" * 129, "spa ce", "ünicode"],
)
def test_external_user_id_grammar_is_enforced(bad: str) -> None:
    with pytest.raises(ValidationError):
        user_create(email="x@example.com", external_user_id=bad)
    assert not User.objects.filter(email="x@example.com").exists()


def test_provisioning_after_commit_upserts_the_user_at_pymthouse(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory(email="prov@example.com")

    user.refresh_from_db()
    upstream = {u["externalUserId"]: u for u in sandbox.users()}
    assert upstream[user.external_user_id]["email"] == "prov@example.com"
    assert upstream[user.external_user_id]["status"] == "active"
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED
    assert user.pymthouse_active is True
    assert user.pymthouse_user_id is not None
    assert user.provisioning_error == ""
    assert user.provisioning_attempts == 1
    calls = sandbox.requests(USERS_PATH)
    assert [(c["method"], c["auth"], c["status"]) for c in calls] == [("POST", "basic", 201)]
    assert calls[0]["clientId"] == "m2m_b50c8e3d43c6d3641cae2e66"


def test_provisioning_twice_is_idempotent(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()
    first_upstream_id = User.objects.get(pk=user.pk).pymthouse_user_id

    provision_user_task.delay(user.pk)

    user.refresh_from_db()
    assert user.pymthouse_user_id == first_upstream_id
    assert [u["externalUserId"] for u in sandbox.users()] == [user.external_user_id]
    statuses = [c["status"] for c in sandbox.requests(USERS_PATH)]
    assert statuses == [201, 200]


@pytest.mark.worker
def test_retryable_upstream_error_is_retried_by_the_worker_then_succeeds(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", USERS_PATH, status=503, body={"error": "busy"}, times=2)

    user = UserFactory()

    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED
    )
    assert [c["status"] for c in sandbox.requests(USERS_PATH)] == [503, 503, 201]


@pytest.mark.worker
def test_retryable_error_gives_up_after_max_retries(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", USERS_PATH, status=503, body={"error": "busy"})

    user = UserFactory()

    wait_for(lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.FAILED)
    user.refresh_from_db()
    assert "503" in user.provisioning_error
    # the first attempt plus PROVISION_MAX_RETRIES retries, then it stops
    assert len(sandbox.requests(USERS_PATH)) == 1 + PROVISION_MAX_RETRIES
    time.sleep(1.5)
    assert len(sandbox.requests(USERS_PATH)) == 1 + PROVISION_MAX_RETRIES


@pytest.mark.worker
def test_retry_after_is_honoured(sandbox: SandboxControl, worker_process: WorkerProcess) -> None:
    sandbox.add_fault(
        "POST",
        USERS_PATH,
        status=429,
        body={"error": "slow down"},
        headers={"Retry-After": "3"},
        times=1,
    )

    user = UserFactory()

    wait_for(
        lambda: User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED
    )
    first, second = sandbox.requests(USERS_PATH)
    assert (first["status"], second["status"]) == (429, 201)
    assert _seconds_between(first["time"], second["time"]) >= 3.0


def _seconds_between(earlier: str | float, later: str | float) -> float:
    def parse(value: str | float) -> float:
        if isinstance(value, int | float):
            return float(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    return parse(later) - parse(earlier)


def test_terminal_upstream_error_is_recorded_and_not_retried(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    sandbox.add_fault("POST", USERS_PATH, status=400, body={"error": "externalUserId is required"})
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()

    user.refresh_from_db()
    assert user.provisioning_status == ProvisioningStatus.FAILED
    assert "externalUserId is required" in user.provisioning_error
    assert len(sandbox.requests(USERS_PATH)) == 1
    assert sandbox.users() == []


def test_wrong_secret_fails_provisioning_without_leaking_it(
    sandbox: SandboxControl, django_capture_on_commit_callbacks, settings
) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "0" * 64
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()

    user.refresh_from_db()
    assert user.provisioning_status == ProvisioningStatus.FAILED
    assert "0" * 64 not in user.provisioning_error
    assert [c["status"] for c in sandbox.requests(USERS_PATH)] == [401]


def test_deactivating_a_user_deactivates_them_upstream_and_back(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()
    staff = User.objects.create_superuser(email="staff@example.com", password="pw-staff-123")

    with django_capture_on_commit_callbacks(execute=True):
        user_set_active(user=user, is_active=False, acting_user=staff)

    user.refresh_from_db()
    upstream = {u["externalUserId"]: u for u in sandbox.users()}
    assert upstream[user.external_user_id]["status"] == "inactive"
    assert user.is_active is False
    assert user.pymthouse_active is False
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED

    with django_capture_on_commit_callbacks(execute=True):
        user_set_active(user=user, is_active=True, acting_user=staff)

    user.refresh_from_db()
    upstream = {u["externalUserId"]: u for u in sandbox.users()}
    assert upstream[user.external_user_id]["status"] == "active"
    assert user.pymthouse_active is True


def test_sweep_reenqueues_only_stale_pending_users(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False):  # provisioning "lost"
        stale = UserFactory()
        fresh = UserFactory()
    User.objects.filter(pk=stale.pk).update(date_joined=timezone.now() - timedelta(minutes=10))

    assert users_provision_pending() == 1

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.provisioning_status == ProvisioningStatus.PROVISIONED
    assert fresh.provisioning_status == ProvisioningStatus.PENDING
    assert [u["externalUserId"] for u in sandbox.users()] == [stale.external_user_id]


def test_sweep_gives_up_on_a_user_whose_provisioning_keeps_dying(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    from accounts.services import PROVISION_MAX_ATTEMPTS

    with django_capture_on_commit_callbacks(execute=False):
        stuck = UserFactory()
    User.objects.filter(pk=stuck.pk).update(
        date_joined=timezone.now() - timedelta(minutes=10),
        provisioning_attempts=PROVISION_MAX_ATTEMPTS,
    )

    assert users_provision_pending() == 0

    stuck.refresh_from_db()
    assert stuck.provisioning_status == ProvisioningStatus.FAILED
    assert stuck.provisioning_error == "gave up after repeated attempts"
    assert sandbox.users() == []
