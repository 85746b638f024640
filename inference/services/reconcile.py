"""The periodic sweep: lost messages and abandoned runs (beat, every minute)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from inference.models import FailureCode, Generation, GenerationStage, GenerationStatus
from inference.services.transitions import generation_fail
from inference.tasks import generation_run_task

logger = logging.getLogger("inference.services")

BATCH = 200


def _send(generation_id: uuid.UUID, *, claim: Q, now: datetime, **changes: object) -> bool:
    """Record the new message first (a conditional UPDATE only one sweep can win), then send it."""
    if not Generation.objects.filter(claim, pk=generation_id).update(enqueued_at=now, **changes):
        return False
    generation_run_task.delay(str(generation_id))
    return True


def generations_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue lost messages and recover runs whose worker died.

    * ``queued`` with no message sent for ``INFERENCE_REQUEUE_AFTER_SECONDS`` (the
      window): a message is sent and its time recorded, so however often (or
      concurrently) the sweep runs, each generation gets at most one per window.
      Retry countdowns are capped below the window (``inference.tasks``).
    * ``running`` past the hard time limit (plus a margin): no worker still owns it.
      Without a payment claim it goes back to ``queued`` (the attempt cap in
      ``attempt_start`` ends a generation whose worker keeps dying); with one it ends
      ``outcome_unknown`` with the claim kept (never pay twice).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.INFERENCE_REQUEUE_AFTER_SECONDS)
    stale = Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, created_at__lt=cutoff)
    lost = list(
        Generation.objects.filter(stale, status=GenerationStatus.QUEUED)
        .order_by("created_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    requeued = sum(
        _send(pk, claim=stale & Q(status=GenerationStatus.QUEUED), now=now) for pk in lost
    )

    abandoned_before = now - timedelta(seconds=settings.INFERENCE_TIME_LIMIT + 120)
    abandoned = list(
        Generation.objects.filter(
            status=GenerationStatus.RUNNING, attempt_started_at__lt=abandoned_before
        ).values_list("pk", "attempt_id", "payment_claimed_at")[:BATCH]
    )
    interrupted = 0
    for pk, attempt_id, claimed_at in abandoned:
        if claimed_at is not None:
            interrupted += generation_fail(
                generation_id=pk, code=FailureCode.OUTCOME_UNKNOWN, attempt_id=attempt_id
            )
            continue
        owned = Q(
            status=GenerationStatus.RUNNING, attempt_id=attempt_id, payment_claimed_at__isnull=True
        )
        requeued += _send(
            pk,
            claim=owned,
            now=now,
            status=GenerationStatus.QUEUED,
            attempt_id="",
            stage=GenerationStage.RETRYING,
        )
    if requeued or interrupted:
        logger.info("reconcile: %d re-enqueued, %d ended", requeued, interrupted)
    return {"requeued": requeued, "interrupted": interrupted}
