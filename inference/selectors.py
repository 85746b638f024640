"""Reads for the inference app. Every read is scoped to its owner: another
user's generation is indistinguishable from one that does not exist."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.db import values_in
from billing.selectors import ImageQuote, LowBalance, image_quotes, low_balance_notice
from billing.services import account_open
from inference.models import (
    AdmittedImage,
    Generation,
    GenerationStage,
    GenerationStatus,
)

#: Manifest ids per query of the mirror's app-wide join (well under SQLite's 32,766
#: bound parameters).
_APP_JOIN_BATCH = 5000


def generation_list(
    *,
    owner_id: int,
    search: str = "",
    status: str = "",
    model_id: str = "",
) -> QuerySet[Generation]:
    """The owner's generations, newest first; ``search`` is a case-insensitive part of
    the prompt, ``status`` a ``GenerationStatus`` value, ``model_id`` one model (empty:
    any). The owner's rows are few enough that the ``generation_owner_recent`` index
    and a scan of them answer every filter."""
    generations = Generation.objects.for_owner(owner_id)
    if search.strip():
        generations = generations.filter(prompt__icontains=search.strip())
    if status:
        generations = generations.filter(status=status)
    if model_id:
        generations = generations.filter(model_id=model_id)
    return generations.order_by("-created_at")


def generation_queue_position(*, generation: Generation) -> int | None:
    """1 for the next queued generation to start, None unless it is queued.

    A count of the queued generations (everyone's) submitted before it, on the status
    index: it is where it stands in the queue the workers take in order.
    """
    if generation.status != GenerationStatus.QUEUED:
        return None
    ahead = Generation.objects.filter(
        status=GenerationStatus.QUEUED, created_at__lt=generation.created_at
    ).count()
    return ahead + 1


@dataclass(frozen=True)
class GenerationStep:
    """One ``GenerationStage`` of a generation as a step: ``state`` is ``done``,
    ``current``, ``todo``, ``failed`` (where a failed or canceled one ended) or
    ``skipped``; ``at`` when the server recorded reaching it (not every stage is)."""

    stage: str
    label: str
    state: str
    at: datetime | None


#: The steps a generation goes through (``retrying`` shows as the queued step).
STEP_STAGES: tuple[GenerationStage, ...] = (
    GenerationStage.QUEUED,
    GenerationStage.AUTHORIZING,
    GenerationStage.CONNECTING,
    GenerationStage.PAYING,
    GenerationStage.GENERATING,
    GenerationStage.SAVING,
    GenerationStage.DONE,
)

_FINISHED_LABELS: dict[str, str] = {
    GenerationStatus.SUCCEEDED: "Done",
    GenerationStatus.FAILED: "Failed",
    GenerationStatus.CANCELED: "Canceled",
}


def generation_steps(*, generation: Generation) -> list[GenerationStep]:
    """The stages as steps, with the times the row records: queued (created), running
    from ``authorizing`` (started), ``paying`` (payment claimed), the end (finished)."""
    times: dict[GenerationStage, datetime | None] = {
        GenerationStage.QUEUED: generation.created_at,
        GenerationStage.AUTHORIZING: generation.started_at,
        GenerationStage.PAYING: generation.payment_claimed_at,
        GenerationStage.DONE: generation.finished_at,
    }
    current = GenerationStage.of(generation.stage)
    if current == GenerationStage.RETRYING:
        current = GenerationStage.QUEUED
    succeeded = generation.status == GenerationStatus.SUCCEEDED
    steps: list[GenerationStep] = []
    for stage in STEP_STAGES:
        at = times.get(stage)
        label = stage.label
        if stage == GenerationStage.DONE:
            label = _FINISHED_LABELS.get(generation.status, stage.label)
            state = ("done" if succeeded else "failed") if generation.is_finished else "todo"
        elif generation.is_finished:
            reached = (
                at is not None
                or (stage == GenerationStage.CONNECTING and generation.started_at is not None)
                or (stage == GenerationStage.GENERATING and generation.expected_fee_wei is not None)
            )
            state = "done" if succeeded or reached else "skipped"
        elif stage.order < current.order:
            state = "done"
        elif stage == current:
            state = "current"
        else:
            state = "todo"
        steps.append(GenerationStep(stage=stage.value, label=label, state=state, at=at))
    return steps


def generation_elapsed_seconds(*, generation: Generation, now: datetime | None = None) -> float:
    """Seconds since it was submitted (until it finished, once it has): the page ticks
    on from this value, so a client's clock does not matter."""
    end = generation.finished_at or now or timezone.now()
    return max(0.0, (end - generation.created_at).total_seconds())


def generation_get(*, owner_id: int, generation_id: uuid.UUID | str) -> Generation | None:
    try:
        key = uuid.UUID(str(generation_id))
    except ValueError:
        return None
    return Generation.objects.for_owner(owner_id).filter(pk=key).first()


def model_choices() -> list[str]:
    """Models users may pick (settings.INFERENCE_MODELS; the first is the default)."""
    return list(settings.INFERENCE_MODELS)


SIZE_PRESETS: tuple[tuple[str, int, int], ...] = (
    ("Square", 1024, 1024),
    ("Square (small)", 512, 512),
    ("Landscape 16:9", 1024, 576),
    ("Portrait 9:16", 576, 1024),
    ("Landscape 4:3", 1024, 768),
    ("Portrait 3:4", 768, 1024),
)


def size_presets() -> list[tuple[str, int, int]]:
    low, high = settings.INFERENCE_MIN_SIZE, settings.INFERENCE_MAX_SIZE
    return [p for p in SIZE_PRESETS if low <= p[1] <= high and low <= p[2] <= high]


def generations_by_manifest(
    *, manifest_ids: set[str], owner_ids: set[int]
) -> dict[tuple[int, str], tuple[uuid.UUID, date]]:
    """``(owner_id, manifest_id) -> (generation id, UTC day)`` when exactly one matches.

    For the usage mirror: it joins pymthouse's per-manifest rows to our generations by
    the payment's manifest id, same owner only (1000 ids per query). A generation deleted
    while its paid outcome was unknown is joined through its admission record (its id no
    longer names a row: ``generations_existing`` tells which do).
    """
    if not manifest_ids or not owner_ids:
        return {}
    found: dict[tuple[int, str], list[tuple[uuid.UUID, date]]] = defaultdict(list)
    ids = sorted(manifest_ids)
    for offset in range(0, len(ids), 1000):
        for pk, manifest_id, owner_id, created_at in Generation.objects.filter(
            manifest_id__in=ids[offset : offset + 1000], owner_id__in=owner_ids
        ).values_list("id", "manifest_id", "owner_id", "created_at"):
            found[(owner_id, manifest_id)].append((pk, created_at.astimezone(UTC).date()))
        # Deleted while a paid outcome was unknown: still charged when metered.
        for pk, manifest_id, owner_id, admitted_at in AdmittedImage.objects.filter(
            manifest_id__in=ids[offset : offset + 1000],
            owner_id__in=owner_ids,
            paid_outcome_unknown=True,
        ).values_list("generation_id", "manifest_id", "owner_id", "admitted_at"):
            found[(owner_id, manifest_id)].append((pk, admitted_at.astimezone(UTC).date()))
    return {key: matches[0] for key, matches in found.items() if len(matches) == 1}


def generations_by_manifest_app(
    *, manifest_ids: Sequence[str], owner_ids: Container[int]
) -> dict[str, tuple[int, uuid.UUID, date]]:
    """``manifest_id -> (owner id, generation id, UTC day)`` over every owner.

    For the usage mirror's app-wide pass: pymthouse's ``groupBy=manifest`` without a user
    filter names no user, so a row is attributed to the one generation (or admission
    record of a generation deleted while its paid outcome was unknown) holding its
    manifest id. An id that several match, or whose owner is not in ``owner_ids``, is
    left out (the mirror then reads that user's rows with ``userId``).
    """
    found: dict[str, list[tuple[int, uuid.UUID, date]]] = defaultdict(list)
    ids = sorted(set(manifest_ids) - {""})
    for offset in range(0, len(ids), _APP_JOIN_BATCH):
        batch = ids[offset : offset + _APP_JOIN_BATCH]
        for pk, manifest_id, owner_id, day in _by_manifest(
            Generation.objects.filter(manifest_id__in=values_in(batch)), "id", "created_at"
        ):
            found[manifest_id].append((owner_id, pk, day))
        for pk, manifest_id, owner_id, day in _by_manifest(
            AdmittedImage.objects.filter(
                manifest_id__in=values_in(batch), paid_outcome_unknown=True
            ),
            "generation_id",
            "admitted_at",
        ):
            found[manifest_id].append((owner_id, pk, day))
    return {
        manifest_id: matches[0]
        for manifest_id, matches in found.items()
        if len(matches) == 1 and matches[0][0] in owner_ids
    }


def _by_manifest(
    queryset: QuerySet[Any], id_field: str, moment_field: str
) -> Iterator[tuple[uuid.UUID, str, int, date]]:
    """``(id, manifest id, owner id, UTC day)`` rows, read without the ORM's per-value
    converters (a bulk join reads hundreds of thousands): the UTC day is computed by the
    database, the UUID parsed once."""
    sql, params = (
        queryset.annotate(utc_day=TruncDate(moment_field, tzinfo=UTC))
        .values_list(id_field, "manifest_id", "owner_id", "utc_day")
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for pk, manifest_id, owner_id, day in cursor.fetchall():
            yield (
                pk if isinstance(pk, uuid.UUID) else uuid.UUID(pk),
                manifest_id,
                owner_id,
                day if isinstance(day, date) else date.fromisoformat(day),
            )


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def generations_counted_this_month(*, owner_id: int, now: datetime | None = None) -> int:
    """Images that count against a monthly allowance: all admitted this calendar month
    (UTC) except those that ended without paying anything, deleted ones included (the
    append-only ``AdmittedImage`` record). Billing is handed this count at admission and
    calls it (``billing.hooks``) to show an allowance."""
    start = _month_start(now or timezone.now())
    return AdmittedImage.objects.filter(
        owner_id=owner_id, admitted_at__gte=start, counts=True
    ).count()


def generations_existing(*, generation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``generation_ids`` still name a generation row (the others were deleted)."""
    ids = sorted(generation_ids, key=lambda pk: pk.int)
    found: set[uuid.UUID] = set()
    for offset in range(0, len(ids), _APP_JOIN_BATCH):
        found.update(
            Generation.objects.filter(
                pk__in=values_in(ids[offset : offset + _APP_JOIN_BATCH], uuids=True)
            ).values_list("pk", flat=True)
        )
    return found


def generations_charged_by_their_run(*, generation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``generation_ids`` are still running with a confirmed payment: their own
    worker charges them (``transitions.attempt_succeed`` or ``generation_fail``, right
    after the paid call), so the usage mirror and the stale-hold sweep leave them alone.

    Read it with the generation rows locked (the mirror's chunk locks them first): the
    worker's charge writes the row in its transaction, so the answer cannot go stale
    before the caller's commit. A worker that dies leaves the row running; the attempt
    cap or the reconcile sweep ends it through ``generation_fail``, which charges it.
    """
    ids = sorted(generation_ids, key=lambda pk: pk.int)
    found: set[uuid.UUID] = set()
    for offset in range(0, len(ids), _APP_JOIN_BATCH):
        found.update(
            Generation.objects.filter(
                pk__in=values_in(ids[offset : offset + _APP_JOIN_BATCH], uuids=True),
                status=GenerationStatus.RUNNING,
                tickets_paid__gt=0,
            ).values_list("pk", flat=True)
        )
    return found


def generation_deleted_paid_unknown(*, generation_id: uuid.UUID) -> bool:
    """Was this generation deleted while its payment was claimed and its outcome unknown?"""
    return AdmittedImage.objects.filter(
        generation_id=generation_id, paid_outcome_unknown=True
    ).exists()


def model_quotes(*, owner_id: int) -> dict[str, ImageQuote]:
    """For each model the user may pick: what the next image costs them (or how many are
    left this month) and whether it would be admitted now (``billing.selectors.image_quote``)."""
    account = account_open(user_id=owner_id)
    return image_quotes(account=account, model_ids=model_choices())


def owner_low_balance(*, owner_id: int) -> LowBalance | None:
    """The low-balance notice of the user's billing account, if their credit is low."""
    return low_balance_notice(account=account_open(user_id=owner_id))


def admitted_images_per_day(*, owner_id: int, since: date) -> dict[date, int]:
    """Images admitted per UTC day from ``since`` (the append-only admission record, so
    deleted images still count): billing's per-day chart, for every plan."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    rows = (
        AdmittedImage.objects.filter(owner_id=owner_id, admitted_at__gte=start)
        .annotate(day=TruncDate("admitted_at", tzinfo=UTC))
        .values_list("day")
        .annotate(images=Count("pk"))
        .order_by()
    )
    return {day: images for day, images in rows}
