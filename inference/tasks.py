"""Celery tasks of the inference app: thin, bounded, idempotent."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from inference import services
from inference.errors import GenerationRetryableError
from inference.failure_codes import FailureCode
from integrations.task_retry import retry_countdown

logger = logging.getLogger("tasks." + __name__)


class GenerationRunTask(Task):  # type: ignore[type-arg]
    """Records a terminal failure for anything the run itself could not record."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        generation_id = kwargs.get("generation_id") or (args[0] if args else None)
        if generation_id is None:
            return
        if services.generation_fail_unexpected(
            generation_id=str(generation_id), attempt_id=task_id
        ):
            logger.error(
                "generation %s: ended by %s in the task", generation_id, type(exc).__name__
            )


@shared_task(
    bind=True,
    base=GenerationRunTask,
    # Every write of a run is conditional on the attempt (the message id), and a
    # claimed payment is never made again, so a message may be redelivered after a
    # worker dies mid-run: it resumes its own attempt (inference.services.transitions).
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=settings.INFERENCE_MAX_RETRIES,
    soft_time_limit=settings.INFERENCE_SOFT_TIME_LIMIT,
    time_limit=settings.INFERENCE_TIME_LIMIT,
)
def generation_run_task(self: Task, generation_id: str) -> None:  # type: ignore[type-arg]
    try:
        services.generation_run(generation_id=generation_id, attempt_id=self.request.id)
    except GenerationRetryableError as exc:
        if self.request.retries < settings.INFERENCE_MAX_RETRIES:
            countdown = retry_countdown(retries=self.request.retries, retry_after=exc.retry_after)
            logger.info(
                "generation %s: retry %d in %.1fs",
                generation_id,
                self.request.retries + 1,
                countdown,
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
        services.generation_fail(
            generation_id=generation_id,
            code=FailureCode.UPSTREAM_UNAVAILABLE,
            attempt_id=self.request.id,
        )
    except (OperationalError, InterfaceError) as exc:
        # The database went away: nothing could be recorded. The same message comes
        # back and resumes its attempt (or ends it, if the payment was claimed).
        if self.request.retries < settings.INFERENCE_MAX_RETRIES:
            countdown = retry_countdown(retries=self.request.retries, retry_after=None)
            logger.warning(
                "generation %s: database unavailable; retry in %.1fs", generation_id, countdown
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
        raise
    except SoftTimeLimitExceeded:
        # Usually already recorded by generation_run; this covers the start itself.
        services.generation_fail(
            generation_id=generation_id,
            code=FailureCode.TIMEOUT,
            code_if_claimed=FailureCode.OUTCOME_UNKNOWN,
            attempt_id=self.request.id,
        )


@shared_task(expires=50)
def generations_reconcile_task() -> dict[str, int]:
    return services.generations_reconcile()


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def holds_resolve_stale_task() -> int:
    """Periodic: settle or release billing holds left open; each one is in the log."""
    report = services.holds_resolve_stale()
    if report:
        logger.warning("billing: resolved %d stale holds", len(report))
    return len(report)


@shared_task(expires=3000)
def idempotent_requests_purge_task() -> int:
    """Forget ``Idempotency-Key``s older than 24 hours."""
    return services.idempotent_requests_purge()
