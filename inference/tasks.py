"""Celery tasks of the inference app: thin, bounded, idempotent."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from accounts.tasks import retry_countdown
from inference.errors import GenerationRetryableError

logger = logging.getLogger("tasks." + __name__)


@shared_task(
    bind=True,
    # generation_run is idempotent and never pays twice (see inference.services),
    # so a message may be redelivered after a worker dies mid-run.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=settings.INFERENCE_MAX_RETRIES,
    soft_time_limit=settings.INFERENCE_SOFT_TIME_LIMIT,
    time_limit=settings.INFERENCE_TIME_LIMIT,
)
def generation_run_task(self: Task, generation_id: str) -> None:  # type: ignore[type-arg]
    from inference.services import generation_fail, generation_run

    try:
        generation_run(generation_id=generation_id)
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
        generation_fail(generation_id=generation_id, code="upstream_unavailable")
    except SoftTimeLimitExceeded:
        logger.warning("generation %s hit the soft time limit", generation_id)
        generation_fail(generation_id=generation_id, code="timeout")


@shared_task(expires=50)
def generations_reconcile_task() -> dict[str, int]:
    from inference.services import generations_reconcile

    return generations_reconcile()
