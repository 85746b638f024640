"""What the owner of a generation does to it while watching: cancel and retry.

Cancel is one conditional UPDATE: it wins only while the generation is unfinished and
no payment was claimed (status and stage say so too: the payment claim sets the
``paying`` stage in the same UPDATE, ``AttemptPaymentGuard.claim``). The claim is a
conditional UPDATE on ``status=running``, so of a cancel and a claim racing for the
row exactly one wins: a canceled generation buys no ticket, and a claimed one is
never canceled. The credit hold is released in the cancel's transaction through the
one place that ends a generation without a claim
(``transitions._generation_ended_without_claim``).

Retry is a new generation with the same parameters, admitted like any submission
(priced, held, counted and rate-limited by ``generation_create``).
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from inference.errors import (
    GenerationAlreadyPaidError,
    GenerationFinishedError,
    GenerationNotRetryableError,
)
from inference.events import generation_changed
from inference.models import Generation, GenerationStage, GenerationStatus
from inference.services.admission import generation_create
from inference.services.transitions import _generation_ended_without_claim

logger = logging.getLogger("inference.services")

CANCELED_MESSAGE = "You canceled this image. Nothing was charged."
ALREADY_PAID_MESSAGE = "Already paid for on the network; it can't be cancelled now"
FINISHED_MESSAGE = "This image has already finished; there is nothing to cancel."
NOT_RETRYABLE_MESSAGE = "Only a failed or canceled image can be retried."

#: Stages before any payment: a generation at one of them may be canceled.
CANCELABLE_STAGES = (
    GenerationStage.QUEUED,
    GenerationStage.RETRYING,
    GenerationStage.AUTHORIZING,
    GenerationStage.CONNECTING,
)
RETRYABLE_STATUSES = (GenerationStatus.FAILED, GenerationStatus.CANCELED)


def generation_cancel_by_owner(*, generation_id: uuid.UUID, acting_user: User) -> Generation:
    """Cancel the owner's unfinished, unpaid generation; returns it canceled.

    Raises :class:`GenerationAlreadyPaidError` once its payment was claimed and
    :class:`GenerationFinishedError` once it finished; then nothing changes.
    ``Generation.DoesNotExist`` when it is not the acting user's.
    """
    with transaction.atomic():
        canceled = Generation.objects.filter(
            pk=generation_id,
            owner_id=acting_user.pk,
            status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING],
            stage__in=CANCELABLE_STAGES,
            payment_claimed_at__isnull=True,
        ).update(
            status=GenerationStatus.CANCELED,
            stage=GenerationStage.DONE,
            error_code="",
            error_message=CANCELED_MESSAGE,
            finished_at=timezone.now(),
        )
        if canceled:
            _generation_ended_without_claim(generation_id=generation_id, reason="canceled")
            # Watchers (event stream, long poll) hear it after commit, as every transition.
            generation_changed(
                generation_id=generation_id,
                status=GenerationStatus.CANCELED,
                stage=GenerationStage.DONE,
            )
        generation = Generation.objects.get(pk=generation_id, owner_id=acting_user.pk)
    if not canceled:
        if generation.is_finished:
            raise GenerationFinishedError(FINISHED_MESSAGE)
        raise GenerationAlreadyPaidError(ALREADY_PAID_MESSAGE)
    logger.info("generation %s canceled by user %s", generation.pk, acting_user.pk)
    return generation


def generation_retry(*, generation: Generation, acting_user: User) -> Generation:
    """A new generation with ``generation``'s parameters (a failed or canceled one).

    The seed is the one the user chose (none: a new random one), as "Generate similar"
    does. Admission refusals and limits raise exactly as for a new submission.
    """
    if generation.owner_id != acting_user.pk:
        raise Generation.DoesNotExist
    if generation.status not in RETRYABLE_STATUSES:
        raise GenerationNotRetryableError(NOT_RETRYABLE_MESSAGE)
    retried = generation_create(
        owner=acting_user,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        model_id=generation.model_id,
        width=generation.width,
        height=generation.height,
        seed=generation.seed,
    )
    logger.info("generation %s retried as %s", generation.pk, retried.pk)
    return retried
