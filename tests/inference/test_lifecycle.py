"""The generation lifecycle under duplicates, crashes and concurrency.

Attempts run in threads of this process (each with its own database
connection) against the sandbox; faults and delays come from the sandbox's
control API, so the real clients run over real HTTP.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import DataError, connection, connections
from django.utils import timezone

from accounts.models import User
from inference.errors import GenerationRateLimitedError, GenerationRetryableError
from inference.models import Generation, GenerationStatus
from inference.services import (
    FAILURE_MESSAGES,
    generation_create,
    generation_run,
    generations_reconcile,
)
from tests.conftest import clear_cache
from tests.factories import UserFactory
from tests.helpers import wait_for
from tests.sandbox_server import SandboxControl
from tests.worker import purge_broker

pytestmark = pytest.mark.django_db(transaction=True)

PAYMENT = "/signer/generate-live-payment"
DISCOVER = "/signer/discover-orchestrators"
TOKEN = "/api/v1/oidc/token"


@pytest.fixture
def user(sandbox: SandboxControl, django_capture_on_commit_callbacks) -> User:
    with django_capture_on_commit_callbacks(execute=True):  # provisioned at the sandbox
        return UserFactory()


def _queued(user: User) -> Generation:
    return generation_create(
        owner=user, prompt="a lighthouse", width=512, height=384, seed=3, enqueue=False
    )


def _row(generation: Generation) -> Generation:
    return Generation.objects.get(pk=generation.pk)


class Attempt(threading.Thread):
    """One run of ``generation_run`` in its own thread and database connection."""

    def __init__(self, generation: Generation) -> None:
        super().__init__(daemon=True)
        self.generation_id = str(generation.pk)
        self.outcome: object = None

    def run(self) -> None:
        try:
            self.outcome = generation_run(generation_id=self.generation_id)
        except Exception as exc:
            self.outcome = exc
        finally:
            connections.close_all()

    def result(self) -> object:
        self.join(timeout=60)
        assert not self.is_alive()
        return self.outcome


def _retryable_attempt(sandbox: SandboxControl, generation: Generation) -> object:
    """A second attempt whose credential mint fails with a retryable 503."""
    sandbox.add_fault("POST", TOKEN, status=503, body={"error": "temporarily_unavailable"})
    try:
        return generation_run(generation_id=str(generation.pk))
    except GenerationRetryableError as exc:
        return exc
    finally:
        sandbox.clear_faults()


def _assert_paid_once_and_delivered(sandbox: SandboxControl, generation: Generation) -> None:
    row = _row(generation)
    assert row.status == GenerationStatus.SUCCEEDED, (row.status, row.error_code)
    assert row.image.storage.exists(row.image.name)  # the delivered image is kept
    assert row.tickets_paid == 1
    assert [r["status"] for r in sandbox.requests(PAYMENT)] == [200]
    # Usage joins on the manifest id stored at claim time (the collector ignores ours).
    assert row.manifest_id
    assert [e["manifestId"] for e in sandbox.events()] == [row.manifest_id]


# --- two attempts of one generation ---------------------------------------------------


def test_duplicate_failing_before_the_first_attempt_claims_changes_nothing(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)
    sandbox.add_fault("GET", DISCOVER, delay=2, times=1)  # A waits before its claim
    first = Attempt(generation)
    first.start()
    wait_for(lambda: _row(generation).stage == "connecting")

    duplicate = _retryable_attempt(sandbox, generation)

    assert duplicate is None  # not started: the row is not queued
    assert _row(generation).payment_claimed_at is None
    assert isinstance(first.result(), Generation)
    _assert_paid_once_and_delivered(sandbox, generation)


def test_duplicate_failing_after_the_first_attempt_claimed_changes_nothing(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)
    sandbox.add_fault("POST", PAYMENT, delay=2, times=1)  # A waits holding its claim
    first = Attempt(generation)
    first.start()
    wait_for(lambda: _row(generation).payment_claimed_at is not None)

    duplicate = _retryable_attempt(sandbox, generation)

    assert duplicate is None
    assert _row(generation).status == GenerationStatus.RUNNING
    assert isinstance(first.result(), Generation)
    _assert_paid_once_and_delivered(sandbox, generation)


def test_first_attempt_retrying_lets_the_duplicate_finish_and_its_retry_does_nothing(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)

    first = _retryable_attempt(sandbox, generation)
    assert isinstance(first, GenerationRetryableError)
    assert (_row(generation).status, _row(generation).stage) == ("queued", "retrying")
    duplicate = Attempt(generation)
    duplicate.start()
    assert isinstance(duplicate.result(), Generation)
    retry = generation_run(generation_id=str(generation.pk))  # the first attempt's retry

    assert retry is None
    _assert_paid_once_and_delivered(sandbox, generation)
    assert _row(generation).attempts == 2


def test_first_attempts_retry_arriving_while_the_duplicate_holds_the_claim_does_nothing(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)
    assert isinstance(_retryable_attempt(sandbox, generation), GenerationRetryableError)
    sandbox.add_fault("POST", PAYMENT, delay=2, times=1)
    duplicate = Attempt(generation)
    duplicate.start()
    wait_for(lambda: _row(generation).payment_claimed_at is not None)

    retry = _retryable_attempt(sandbox, generation)  # the first attempt's retry, failing again

    assert retry is None
    assert isinstance(duplicate.result(), Generation)
    _assert_paid_once_and_delivered(sandbox, generation)


def test_duplicate_after_success_changes_nothing(sandbox: SandboxControl, user: User) -> None:
    generation = _queued(user)
    assert isinstance(generation_run(generation_id=str(generation.pk)), Generation)

    assert _retryable_attempt(sandbox, generation) is None
    assert generation_run(generation_id=str(generation.pk)) is None

    _assert_paid_once_and_delivered(sandbox, generation)


def test_an_attempt_taken_over_by_reconcile_cannot_claim_or_overwrite(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)
    sandbox.add_fault("GET", DISCOVER, delay=3, times=1)
    stale = Attempt(generation)
    stale.start()
    wait_for(lambda: _row(generation).stage == "connecting")
    # Reconcile believes the worker is dead and hands the generation to a new
    # attempt, which runs inline here (tasks are eager in tests) and succeeds.
    Generation.objects.filter(pk=generation.pk).update(
        attempt_started_at=timezone.now() - timedelta(hours=1)
    )
    assert generations_reconcile() == {"requeued": 1, "interrupted": 0}
    delivered = _row(generation).image.name

    assert stale.result() is None  # its claim was refused: it never asked for a ticket
    _assert_paid_once_and_delivered(sandbox, generation)
    assert _row(generation).image.name == delivered


def test_a_redelivered_message_resumes_its_own_attempt_until_the_attempt_cap(
    sandbox: SandboxControl, user: User, settings
) -> None:
    settings.INFERENCE_MAX_ATTEMPTS = 3
    generation = _queued(user)
    # The message "m-1" started the run, then its worker died before paying.
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING, attempt_id="m-1", attempts=2
    )

    assert generation_run(generation_id=str(generation.pk), attempt_id="m-2") is None  # not its row
    assert _row(generation).attempts == 2
    resumed = generation_run(generation_id=str(generation.pk), attempt_id="m-1")  # redelivered

    assert isinstance(resumed, Generation)
    _assert_paid_once_and_delivered(sandbox, generation)
    assert _row(generation).attempts == 3


def test_a_message_whose_worker_keeps_dying_ends_interrupted_at_the_cap(
    sandbox: SandboxControl, user: User, settings
) -> None:
    settings.INFERENCE_MAX_ATTEMPTS = 3
    generation = _queued(user)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING, attempt_id="m-1", attempts=3
    )
    sandbox.clear_requests()

    assert generation_run(generation_id=str(generation.pk), attempt_id="m-1") is None

    row = _row(generation)
    assert (row.status, row.error_code, row.attempts) == ("failed", "interrupted", 3)
    assert row.error_message == FAILURE_MESSAGES["interrupted"]
    assert sandbox.requests(TOKEN) == []  # nothing was asked upstream
    assert sandbox.requests("/signer") == []


# --- reconcile -------------------------------------------------------------------------


@contextmanager
def _published() -> Iterator[Counter[str]]:
    """Messages really sent to the broker (no worker consumes them), by generation id."""
    from config.celery import app

    sent: Counter[str] = Counter()

    def count(sender: str | None = None, body: Any = None, **kwargs: Any) -> None:
        if sender == "inference.tasks.generation_run_task":
            sent[str(body[0][0])] += 1

    purge_broker()
    app.conf.task_always_eager = False
    before_task_publish.connect(count, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(count)
        app.conf.task_always_eager = True
        purge_broker()


def test_reconcile_twice_over_a_backlog_enqueues_each_generation_once(user: User) -> None:
    backlog = [_queued(user) for _ in range(4)]
    long_ago = timezone.now() - timedelta(seconds=settings.INFERENCE_REQUEUE_AFTER_SECONDS + 60)
    Generation.objects.update(created_at=long_ago, enqueued_at=long_ago)

    with _published() as sent:
        first = generations_reconcile()
        second = generations_reconcile()

    assert (first, second) == ({"requeued": 4, "interrupted": 0}, {"requeued": 0, "interrupted": 0})
    assert sent == Counter({str(g.pk): 1 for g in backlog})
    assert all(_row(g).enqueued_at > long_ago for g in backlog)

    # A window later, a generation still queued gets one more message.
    later = timezone.now() + timedelta(seconds=settings.INFERENCE_REQUEUE_AFTER_SECONDS + 1)
    with _published() as sent:
        generations_reconcile(now=later)
        generations_reconcile(now=later)
    assert sent == Counter({str(g.pk): 1 for g in backlog})


def test_a_broker_outage_at_submit_admits_once_and_the_next_sweep_sends_the_message(
    user: User,
) -> None:
    """The row is committed before the message is published: a publish failure must not
    turn the admitted generation into an error (the client would submit again and pay
    twice); the generation is due for the next reconcile sweep instead."""
    from unittest import mock

    from kombu.exceptions import OperationalError as BrokerError

    from inference.tasks import generation_run_task

    before = timezone.now()
    with mock.patch.object(
        generation_run_task, "apply_async", side_effect=BrokerError("Error 111 connecting")
    ) as publish:
        generation = generation_create(
            owner=user, prompt="a lighthouse", width=512, height=384, seed=3
        )
    assert publish.call_count == 1

    row = _row(generation)
    assert (row.status, row.attempts, row.payment_claimed_at) == ("queued", 0, None)
    window = timedelta(seconds=settings.INFERENCE_REQUEUE_AFTER_SECONDS)
    assert row.enqueued_at is not None
    assert row.enqueued_at < before - window
    assert Generation.objects.filter(owner=user).count() == 1

    with _published() as sent:
        first = generations_reconcile()
        second = generations_reconcile()
    assert (first, second) == ({"requeued": 1, "interrupted": 0}, {"requeued": 0, "interrupted": 0})
    assert sent == Counter({str(generation.pk): 1})


def test_retry_countdowns_stay_below_the_reconcile_window_and_visibility_timeout() -> None:
    from integrations.task_retry import retry_countdown

    assert retry_countdown(retries=0, retry_after=86_400) == settings.TASK_RETRY_MAX_DELAY_SECONDS
    assert retry_countdown(retries=30, retry_after=None) <= settings.TASK_RETRY_MAX_DELAY_SECONDS
    assert settings.TASK_RETRY_MAX_DELAY_SECONDS < settings.INFERENCE_REQUEUE_AFTER_SECONDS
    assert settings.TASK_RETRY_MAX_DELAY_SECONDS < settings.BROKER_VISIBILITY_TIMEOUT_SECONDS


# --- unexpected errors end inside the task -------------------------------------------------


def test_a_configuration_error_in_the_task_ends_failed_internal_error(
    sandbox: SandboxControl, user: User, settings, django_capture_on_commit_callbacks
) -> None:
    settings.LIVEPEER_MAX_PRICE_MARKUP = "0.5"  # invalid: must be >= 1
    with pytest.raises(ImproperlyConfigured), django_capture_on_commit_callbacks(execute=True):
        generation_create(owner=user, prompt="a fox", width=512, height=512)

    row = Generation.objects.get()
    assert (row.status, row.error_code) == (GenerationStatus.FAILED, "internal_error")
    assert row.error_message == FAILURE_MESSAGES["internal_error"]
    assert "LIVEPEER" not in row.error_message
    assert row.payment_claimed_at is None
    assert row.finished_at is not None
    assert sandbox.requests(PAYMENT) == []


@pytest.fixture
def worker_semantics() -> Iterator[None]:
    """Eager tasks that, like a worker, log a task's exception and run its ``on_failure``
    instead of re-raising it into the caller."""
    from config.celery import app

    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = True


def test_an_error_before_the_attempt_starts_is_recorded_by_on_failure(
    sandbox: SandboxControl,
    user: User,
    settings,
    worker_semantics,
    django_capture_on_commit_callbacks,
) -> None:
    settings.INFERENCE_BACKEND = "no-such-backend"  # raises before any attempt starts
    with django_capture_on_commit_callbacks(execute=True):
        generation = generation_create(owner=user, prompt="a fox", width=512, height=512)

    row = _row(generation)
    assert (row.status, row.error_code, row.attempts) == ("failed", "internal_error", 0)
    assert row.error_message == FAILURE_MESSAGES["internal_error"]
    assert sandbox.requests("/signer") == []


def _fail_success_write(execute: Callable[..., Any], sql: str, params: Any, *args: Any) -> Any:
    """The database refuses the success write, as Postgres does for an over-long value."""
    if sql.lstrip().upper().startswith("UPDATE") and GenerationStatus.SUCCEEDED in (params or ()):
        raise DataError("value too long for type character varying(200)")
    return execute(sql, params, *args)


def test_a_data_error_after_the_claim_ends_outcome_unknown_with_the_claim_kept(
    sandbox: SandboxControl, user: User
) -> None:
    generation = _queued(user)

    with connection.execute_wrapper(_fail_success_write), pytest.raises(DataError):
        generation_run(generation_id=str(generation.pk))

    row = _row(generation)
    assert (row.status, row.error_code) == (GenerationStatus.FAILED, "outcome_unknown")
    assert row.error_message == FAILURE_MESSAGES["outcome_unknown"]
    assert row.payment_claimed_at is not None  # kept: never pay twice
    assert row.tickets_paid == 1
    assert generation_run(generation_id=str(generation.pk)) is None  # a retry pays nothing
    assert len(sandbox.requests(PAYMENT)) == 1
    assert len(sandbox.events()) == 1


def test_a_provisioning_bug_ends_failed_and_staff_can_retry(
    sandbox: SandboxControl, django_capture_on_commit_callbacks, monkeypatch, worker_semantics
) -> None:
    from accounts import services as account_services
    from accounts.models import ProvisioningStatus
    from accounts.services import user_provision_retry

    def broken_client() -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(account_services, "get_client", broken_client)
    with django_capture_on_commit_callbacks(execute=True):
        user = UserFactory()
    user.refresh_from_db()
    assert user.provisioning_status == ProvisioningStatus.FAILED
    assert user.provisioning_error == "internal error (ZeroDivisionError)"
    assert sandbox.requests("/api/v1/apps/") == []

    monkeypatch.undo()
    staff = User.objects.create_superuser(email="staff@example.com", password="pw-test-12345")
    with django_capture_on_commit_callbacks(execute=True):  # the admin's retry action
        user_provision_retry(user=user, acting_user=staff)
    assert User.objects.get(pk=user.pk).provisioning_status == ProvisioningStatus.PROVISIONED


# --- admission ---------------------------------------------------------------------------


def _cache(kind: str) -> dict[str, Any]:
    if kind == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs REDIS_URL")
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": f"pixelhouse-test-{settings.TEST_RUN_ID}",
        }
    return {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "pixelhouse_cache",
    }


@pytest.mark.parametrize("cache_kind", ["database", "redis"])
@pytest.mark.parametrize(
    ("active_cap", "rate_limit", "accepted"), [(4, 100, 4), (100, 3, 3), (4, 3, 3)]
)
def test_twenty_concurrent_submissions_admit_exactly_the_limit(
    user: User, settings, cache_kind: str, active_cap: int, rate_limit: int, accepted: int
) -> None:
    settings.CACHES = {"default": _cache(cache_kind)}
    if cache_kind == "redis":
        clear_cache()
    else:
        call_command("createcachetable", verbosity=0)
        cache.clear()
    settings.INFERENCE_MAX_ACTIVE_PER_USER = active_cap
    settings.INFERENCE_RATE_LIMIT_COUNT = rate_limit
    settings.INFERENCE_RATE_LIMIT_WINDOW_SECONDS = 3600
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def submit() -> None:
        try:
            barrier.wait(timeout=30)
            _queued(user)
            outcomes.append("accepted")
        except GenerationRateLimitedError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Counter(outcomes) == Counter({"accepted": accepted, "refused": 20 - accepted})
    assert Generation.objects.filter(owner=user).count() == accepted
