"""Deleting a generation and its image."""

from __future__ import annotations

import logging

from django.db import transaction

from accounts.models import User
from inference.errors import GenerationConflictError
from inference.models import Generation, GenerationStatus
from inference.services.transitions import _generation_ended_without_claim

logger = logging.getLogger("inference.services")


def generation_delete(*, generation: Generation, acting_user: User) -> None:
    """Delete a finished or queued generation and its image.

    A running one is refused: money may be moving and the worker owns it. A queued
    one holds no payment claim (requeueing requires none), so its credit hold ends here.
    """
    with transaction.atomic():
        locked = Generation.objects.select_for_update().get(pk=generation.pk)
        if locked.status == GenerationStatus.RUNNING:
            raise GenerationConflictError(
                "This image is still being generated. Delete it once it has finished."
            )
        if locked.status == GenerationStatus.QUEUED and locked.payment_claimed_at is None:
            _generation_ended_without_claim(generation_id=locked.pk, reason="deleted")
        image_name: str = locked.image.name or ""
        storage = locked.image.storage
        locked.delete()
        if image_name:
            transaction.on_commit(lambda: storage.delete(image_name))
    logger.info("generation %s deleted by user %s", generation.pk, acting_user.pk)
