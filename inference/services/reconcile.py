"""The periodic sweeps: lost messages and abandoned runs (beat, every minute), and the
billing holds their hooks left open (every 5 minutes)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from billing.selectors import OpenHold, holds_open_stale
from billing.services import estimated_fee_wei, hold_release, hold_settle, holds_mark_swept
from inference import tasks
from inference.events import generation_changed
from inference.models import FailureCode, Generation, GenerationStage, GenerationStatus
from inference.selectors import generation_deleted_paid_unknown
from inference.services.transitions import generation_fail

logger = logging.getLogger("inference.services")

BATCH = 200


def _send(generation_id: uuid.UUID, *, claim: Q, now: datetime, **changes: object) -> bool:
    """Record the new message first (a conditional UPDATE only one sweep can win), then send it."""
    if not Generation.objects.filter(claim, pk=generation_id).update(enqueued_at=now, **changes):
        return False
    if "status" in changes:
        generation_changed(
            generation_id=generation_id, status=str(changes["status"]), stage=str(changes["stage"])
        )
    tasks.generation_run_task.delay(str(generation_id))
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


# --- stale billing holds -------------------------------------------------------------


@dataclass(frozen=True)
class StaleHold:
    """One stale hold the sweep resolved, for the report and the log."""

    generation_id: str
    user_id: int
    amount_micros: int
    action: str  # "settled", "released", "timed_out"
    detail: str


@dataclass(frozen=True)
class _Fate:
    """What a finished (or vanished) generation means for its hold's money."""

    action: str  # "settle" or "release"
    detail: str
    reason: str
    fee_wei: int | None = None


def _hold_fate(
    *,
    generation: Generation | None,
    generation_id: uuid.UUID,
    timed_out: bool,
    deleted_paid_unknown: bool = False,
) -> _Fate | None:
    """Decide a stale hold from its generation: settle it (succeeded, or paid and
    finished with a known fee), release it (deleted, or ended before paying, or an
    unknown outcome past the timeout), or leave it (``None``) for the usage mirror, or
    for its own worker while it runs with a confirmed payment.
    A generation deleted while its paid outcome was unknown (``deleted_paid_unknown``,
    from its admission record) is still an unknown outcome: it waits for the mirror."""
    if generation is None and deleted_paid_unknown:
        if timed_out:
            reason = "outcome unknown (image deleted) and no metered usage before the timeout"
            return _Fate("release", "unknown", f"{reason}; released")
        return None
    if generation is None:
        return _Fate("release", "deleted", "image deleted; hold released")
    if generation.status == GenerationStatus.RUNNING and generation.tickets_paid:
        # Its attempt is live with a confirmed payment: that worker charges it right
        # after the paid call (or generation_fail does, if it dies). Never here.
        return None
    paid = generation.payment_claimed_at is not None
    unknown = generation.error_code == FailureCode.OUTCOME_UNKNOWN or (
        paid and not generation.is_finished
    )
    if generation.status == GenerationStatus.SUCCEEDED:
        fee = generation.expected_fee_wei
        fee = estimated_fee_wei() if fee is None else fee
        reason = f"image {generation_id}: fee {fee} wei (settled by the stale-hold sweep)"
        return _Fate("settle", "succeeded", reason, fee)
    if generation.is_finished and not paid:
        return _Fate("release", "unpaid", "ended before paying; hold released")
    if generation.is_finished and generation.expected_fee_wei is not None and not unknown:
        fee = generation.expected_fee_wei
        reason = f"image {generation_id}: paid fee {fee} wei (settled by the sweep)"
        return _Fate("settle", "paid", reason, fee)
    if timed_out:
        reason = "outcome unknown and no metered usage before the timeout; released"
        return _Fate("release", "unknown", reason)
    return None


def _hold_resolve(*, hold: OpenHold, now: datetime) -> StaleHold | None:
    generation = Generation.objects.filter(pk=hold.generation_id).first()
    timeout = timedelta(seconds=settings.BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS)
    fate = _hold_fate(
        generation=generation,
        generation_id=hold.generation_id,
        timed_out=now - hold.created_at >= timeout,
        deleted_paid_unknown=generation is None
        and generation_deleted_paid_unknown(generation_id=hold.generation_id),
    )
    if fate is None:
        return None
    if fate.action == "settle":
        assert fate.fee_wei is not None
        done = hold_settle(
            generation_id=hold.generation_id, fee_wei=fate.fee_wei, reason=fate.reason
        )
        action = "settled"
    else:
        done = hold_release(generation_id=hold.generation_id, reason=fate.reason)
        action = "timed_out" if fate.detail == "unknown" else "released"
    if not done:
        return None  # resolved meanwhile by its own hook
    return StaleHold(
        generation_id=str(hold.generation_id),
        user_id=hold.user_id,
        amount_micros=hold.amount_micros,
        action=action,
        detail=fate.detail,
    )


def holds_resolve_stale(*, now: datetime | None = None) -> list[StaleHold]:
    """Resolve billing holds open longer than ``BILLING_STALE_HOLD_AFTER_SECONDS``.

    A hold whose generation succeeded is settled at its expected fee; one whose generation
    ended without paying (or was deleted) is released; one whose outcome is unknown (kept,
    or deleted by its user) waits for the usage mirror until
    ``BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS``, then is released.
    At most ``BILLING_STALE_HOLD_SWEEP_LIMIT`` holds a run, least recently examined first
    (``billing.selectors.holds_open_stale``). Each resolution is logged at WARNING (a hook
    did not run, or the outcome stayed unknown). Billing moves the money
    (``billing.services.hold_settle`` / ``hold_release``); this decides what it means.
    """
    now = now or timezone.now()
    holds = holds_open_stale(
        before=now - timedelta(seconds=settings.BILLING_STALE_HOLD_AFTER_SECONDS),
        limit=settings.BILLING_STALE_HOLD_SWEEP_LIMIT,
    )
    report = []
    left_open = []
    for hold in holds:
        resolved = _hold_resolve(hold=hold, now=now)
        if resolved is None:
            left_open.append(hold.hold_id)
            continue
        logger.warning(
            "billing: stale hold %s wei for image %s of user %s %s (%s)",
            resolved.amount_micros,
            resolved.generation_id,
            resolved.user_id,
            resolved.action,
            resolved.detail,
        )
        report.append(resolved)
    holds_mark_swept(hold_ids=left_open, now=now)
    return report
