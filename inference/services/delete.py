"""Deleting a generation and its image."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from inference.errors import GenerationConflictError
from inference.events import GONE, generation_changed
from inference.models import AdmittedImage, Generation, GenerationStatus
from inference.services.transitions import _generation_ended_without_claim

logger = logging.getLogger("inference.services")

_OUTCOME_UNKNOWN = "outcome_unknown"


def _admission_record_deleted(generation: Generation) -> None:
    """Mark the admission record deleted; one whose payment was claimed and whose outcome
    is not settled (unfinished, or ``outcome_unknown``) keeps its manifest id, so the
    usage mirror can still charge it and the stale-hold sweep waits for that."""
    unknown = generation.payment_claimed_at is not None and (
        not generation.is_finished or generation.error_code == _OUTCOME_UNKNOWN
    )
    changes: dict[str, object] = {"deleted_at": timezone.now()}
    if unknown:
        changes.update(manifest_id=generation.manifest_id, paid_outcome_unknown=True)
    AdmittedImage.objects.update_or_create(
        generation_id=generation.pk,
        defaults=changes,
        create_defaults={  # a generation admitted before the record existed
            **changes,
            "owner_id": generation.owner_id,
            "admitted_at": generation.created_at,
            "counts": generation.payment_claimed_at is not None
            or generation.status == GenerationStatus.SUCCEEDED,
        },
    )


def generation_delete(*, generation: Generation, acting_user: User) -> None:
    """Delete a finished or queued generation and its image.

    A running one is refused: money may be moving and the worker owns it. A queued
    one holds no payment claim (requeueing requires none), so its credit hold ends here.
    Its admission record stays (deleting gives no allowance back); a paid unknown
    outcome keeps its money path there (:func:`_admission_record_deleted`).
    """
    with transaction.atomic():
        locked = Generation.objects.select_for_update().get(pk=generation.pk)
        if locked.status == GenerationStatus.RUNNING:
            raise GenerationConflictError(
                "This image is still being generated. Delete it once it has finished."
            )
        if locked.status == GenerationStatus.QUEUED and locked.payment_claimed_at is None:
            _generation_ended_without_claim(generation_id=locked.pk, reason="deleted")
        _admission_record_deleted(locked)
        image_name: str = locked.image.name or ""
        storage = locked.image.storage
        locked.delete()
        generation_changed(generation_id=generation.pk, status=GONE, stage="")
        if image_name:
            transaction.on_commit(lambda: storage.delete(image_name))
    logger.info("generation %s deleted by user %s", generation.pk, acting_user.pk)
