"""Writes and workflows for image generations.

Flow: ``generation_create`` (web/API) → ``generation_run_task`` (enqueued after
commit) → ``generation_run`` → pymthouse (mint a fresh per-request credential)
→ Livepeer (discover, pay, generate) → ``_generation_succeed``.

Money rule: at most one ticket request per generation, ever. The payment is
claimed in the database by a conditional UPDATE immediately before the signer
is asked for a ticket, and only released when the signer definitely refused.
A retry or redelivery that finds the claim set never pays again: if the image
was not delivered, the generation fails as ``interrupted`` and the metered
usage (joined by the manifest_id stored at claim time) settles it.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from inference.errors import (
    GenerationConflictError,
    GenerationRateLimitedError,
    GenerationRetryableError,
    GenerationValidationError,
    PaymentAlreadyClaimedError,
)
from inference.models import IMAGE_EXTENSIONS, Generation, GenerationStatus
from inference.tasks import generation_run_task
from integrations import livepeer
from integrations.livepeer import (
    GatewayCredentials,
    ImageRequest,
    InferenceResult,
    LivepeerError,
    PaymentRecord,
    SignerCredentials,
)
from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseError,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    get_client,
)

logger = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1

# User-facing messages per failure code. Upstream detail never reaches users
# except for the network's own validation message on ``invalid_request``.
FAILURE_MESSAGES: dict[str, str] = {
    "insufficient_credit": "You're out of credit. Add funds to keep generating images.",
    "upstream_unavailable": (
        "The image network is busy or unavailable right now. Please try again in a few minutes."
    ),
    "upstream_auth": (
        "We couldn't authorize this generation with our billing provider. "
        "Our team has been notified."
    ),
    "account_unavailable": "Your billing account isn't ready yet. Please try again shortly.",
    "invalid_request": "The image network rejected this request.",
    "model_unavailable": (
        "Nobody on the network is serving this model right now. Try another model."
    ),
    "price_exceeded": "The network's price for this model is above our limit right now.",
    "outcome_unknown": (
        "We lost contact with the network while it was generating. "
        "You will not be charged twice; please try again."
    ),
    "upstream_failed": "The image network failed to deliver this image. Please try again.",
    "interrupted": "This generation was interrupted. Please try again.",
    "timeout": "This generation took too long and was stopped. Please try again.",
}

_RETRYABLE_MESSAGE = "The image network is temporarily unavailable; retrying."


# --- create ------------------------------------------------------------------


def _validate(
    *, prompt: str, negative_prompt: str, model_id: str, width: Any, height: Any, seed: Any
) -> dict[str, str]:
    errors: dict[str, str] = {}
    max_len = settings.INFERENCE_MAX_PROMPT_LENGTH
    if not prompt:
        errors["prompt"] = "Describe the image you want."
    elif len(prompt) > max_len:
        errors["prompt"] = f"Keep the prompt under {max_len} characters."
    if len(negative_prompt) > max_len:
        errors["negative_prompt"] = f"Keep the negative prompt under {max_len} characters."
    if model_id not in settings.INFERENCE_MODELS:
        errors["model_id"] = "Choose one of the available models."
    low, high = settings.INFERENCE_MIN_SIZE, settings.INFERENCE_MAX_SIZE
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            errors[name] = f"{name.capitalize()} must be a whole number of pixels."
        elif not low <= value <= high or value % 8:
            errors[name] = f"{name.capitalize()} must be a multiple of 8 between {low} and {high}."
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX
    ):
        errors["seed"] = f"Seed must be a whole number between 0 and {SEED_MAX}."
    return errors


def _rate_limit(*, owner: User) -> None:
    """Per-user creation quota (fixed window in the shared cache) and active-job cap."""
    window = settings.INFERENCE_RATE_LIMIT_WINDOW_SECONDS
    now = int(time.time())
    key = f"inference:rate:{owner.pk}:{now // window}"
    cache.add(key, 0, timeout=window * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=window * 2)
        count = 1
    if count > settings.INFERENCE_RATE_LIMIT_COUNT:
        raise GenerationRateLimitedError(
            "You're generating too fast. Please wait a moment.",
            retry_after=max(1, window - now % window),
        )
    active = Generation.objects.for_owner(owner.pk).unfinished().count()
    if active >= settings.INFERENCE_MAX_ACTIVE_PER_USER:
        raise GenerationRateLimitedError(
            "You already have images in progress. Wait for one to finish.", retry_after=5
        )


def generation_create(
    *,
    owner: User,
    prompt: str,
    width: Any,
    height: Any,
    negative_prompt: str = "",
    model_id: str | None = None,
    seed: Any = None,
    enqueue: bool = True,
) -> Generation:
    """Validate, apply the per-user limits, store, and enqueue after commit.

    ``enqueue=False`` leaves running to the caller (the verification command
    runs it inline).
    """
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()
    model_id = model_id or settings.INFERENCE_MODELS[0]
    errors = _validate(
        prompt=prompt,
        negative_prompt=negative_prompt,
        model_id=model_id,
        width=width,
        height=height,
        seed=seed,
    )
    if errors:
        raise GenerationValidationError(errors)
    _rate_limit(owner=owner)
    with transaction.atomic():
        generation = Generation(
            owner=owner,
            prompt=prompt,
            negative_prompt=negative_prompt,
            model_id=model_id,
            width=width,
            height=height,
            seed=seed,
            backend=settings.INFERENCE_BACKEND,
        )
        generation.full_clean()
        generation.save()
        generation_id = str(generation.pk)
        if enqueue:
            transaction.on_commit(lambda: generation_run_task.delay(generation_id))
    logger.info("generation %s queued for user %s", generation_id, owner.pk)
    return generation


# --- delete ------------------------------------------------------------------


def generation_delete(*, generation: Generation, acting_user: User) -> None:
    """Delete a finished or queued generation and its image.

    A running one is refused: money may be moving and the worker owns it.
    """
    with transaction.atomic():
        locked = Generation.objects.select_for_update().get(pk=generation.pk)
        if locked.status == GenerationStatus.RUNNING:
            raise GenerationConflictError(
                "This image is still being generated. Delete it once it has finished."
            )
        image_name: str = locked.image.name or ""
        storage = locked.image.storage
        locked.delete()
        if image_name:
            transaction.on_commit(lambda: storage.delete(image_name))
    logger.info("generation %s deleted by user %s", generation.pk, acting_user.pk)


# --- run -----------------------------------------------------------------------


class _DatabasePaymentGuard:
    """Makes 'one ticket per generation' hold across retries, processes and hosts."""

    def __init__(self, generation_id: uuid.UUID) -> None:
        self.generation_id = generation_id

    def claim(self, *, manifest_id: str | None, runner_url: str | None) -> None:
        claimed = Generation.objects.filter(
            pk=self.generation_id, payment_claimed_at__isnull=True
        ).update(
            payment_claimed_at=timezone.now(),
            manifest_id=manifest_id or "",
            runner_url=runner_url or "",
            stage="paying",
        )
        if not claimed:
            raise PaymentAlreadyClaimedError("payment for this generation was already claimed")

    def release(self) -> None:
        Generation.objects.filter(pk=self.generation_id).update(
            payment_claimed_at=None, stage="connecting"
        )

    def confirm(self, record: PaymentRecord) -> None:
        Generation.objects.filter(pk=self.generation_id).update(
            tickets_paid=F("tickets_paid") + 1,
            manifest_id=record.manifest_id or "",
            runner_url=record.runner_url or "",
            price_wei=record.price_wei,
            price_unit=record.price_unit,
            units_paid=record.units_paid,
            expected_fee_wei=record.expected_fee_wei,
            stage="generating",
        )


def _set_stage(generation_id: uuid.UUID, stage: str) -> None:
    Generation.objects.filter(pk=generation_id).update(stage=stage)


def _generation_start(generation_id: str, *, backend_name: str) -> Generation | None:
    """Move queued → running; return None when there is nothing (more) to do."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .select_related("owner")
            .filter(pk=generation_id)
            .first()
        )
        if generation is None or generation.is_finished:
            return None
        if generation.payment_claimed_at is not None:
            # An earlier attempt died after claiming the payment. A ticket may
            # have been spent and we no longer hold it: never pay again.
            _generation_fail_locked(generation, code="interrupted")
            return None
        generation.status = GenerationStatus.RUNNING
        now = timezone.now()
        generation.started_at = generation.started_at or now
        generation.attempt_started_at = now
        generation.attempts += 1
        generation.backend = backend_name
        generation.stage = "authorizing"
        generation.error_code = ""
        generation.error_message = ""
        generation.save(
            update_fields=[
                "status",
                "started_at",
                "attempt_started_at",
                "attempts",
                "backend",
                "stage",
                "error_code",
                "error_message",
            ]
        )
        return generation


def _credentials(
    generation: Generation, backend_name: str
) -> SignerCredentials | GatewayCredentials:
    """Mint a fresh per-request credential; it lives only in this call's memory."""
    client = get_client()
    external_user_id = generation.owner.external_user_id
    if backend_name == "ai-gateway":
        # go-livepeer's gateway ignores the user's token and pays with its own key:
        # mint one only for a gateway configured as honouring it.
        if not settings.LIVEPEER_GATEWAY_HONOURS_USER_TOKENS:
            return GatewayCredentials(gateway_url=settings.LIVEPEER_GATEWAY_URL)
        try:
            token = client.mint_user_token(external_user_id=external_user_id)
        except PymthouseNotFoundError:
            # Not provisioned upstream yet: provision once, then mint once more.
            from accounts.services import user_provision

            user_provision(user_id=generation.owner_id)
            token = client.mint_user_token(external_user_id=external_user_id)
        return GatewayCredentials(
            gateway_url=settings.LIVEPEER_GATEWAY_URL, bearer_token=token.access_token
        )
    session = client.mint_signer_session(external_user_id=external_user_id)
    return SignerCredentials(
        signer_url=session.signer_url,
        discovery_url=session.discovery_url,
        access_token=session.access_token,
    )


def generation_run(*, generation_id: str, backend_name: str | None = None) -> Generation | None:
    """Run one generation. Idempotent: finished generations are left alone.

    Raises :class:`GenerationRetryableError` for upstream hiccups that happened
    before any money moved (the generation is back in ``queued``).
    """
    backend = livepeer.get_backend(backend_name)
    generation = _generation_start(generation_id, backend_name=backend.name)
    if generation is None:
        return None
    request = ImageRequest(
        request_id=generation.gateway_request_id,
        model_id=generation.model_id,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        width=generation.width,
        height=generation.height,
        seed=generation.seed,
    )
    try:
        credentials = _credentials(generation, backend.name)
        _set_stage(generation.pk, "connecting")
        result = backend.generate(
            request, credentials=credentials, guard=_DatabasePaymentGuard(generation.pk)
        )
    except PaymentAlreadyClaimedError:
        logger.warning("generation %s: another attempt owns the payment; stopping", generation.pk)
        return None
    except (PymthouseError, LivepeerError) as exc:
        _generation_upstream_error(generation, exc)
        return generation
    return _generation_succeed(generation, result)


# First match wins. A pymthouse 400 means our request shape or configuration is
# wrong, which the user can do nothing about: reported like an auth failure.
_FAILURE_CODES: tuple[tuple[type[Exception], str], ...] = (
    (PymthouseInsufficientFundsError, "insufficient_credit"),
    (livepeer.LivepeerInsufficientBalanceError, "insufficient_credit"),
    (livepeer.LivepeerOutcomeUnknownError, "outcome_unknown"),
    (livepeer.LivepeerPaidCallFailedError, "upstream_failed"),
    (livepeer.LivepeerPriceExceededError, "price_exceeded"),
    (livepeer.LivepeerModelUnavailableError, "model_unavailable"),
    (livepeer.LivepeerBadRequestError, "invalid_request"),
    (livepeer.LivepeerAuthError, "upstream_auth"),
    (PymthouseAuthError, "upstream_auth"),
    (PymthouseBadRequestError, "upstream_auth"),
    (PymthouseNotFoundError, "account_unavailable"),
)


def _failure_code(exc: PymthouseError | LivepeerError) -> str:
    for error_class, code in _FAILURE_CODES:
        if isinstance(exc, error_class):
            return code
    return "upstream_unavailable" if exc.retryable else "upstream_failed"


def _generation_upstream_error(generation: Generation, exc: PymthouseError | LivepeerError) -> None:
    code = _failure_code(exc)
    payment_claimed = Generation.objects.filter(
        pk=generation.pk, payment_claimed_at__isnull=False
    ).exists()
    if exc.retryable and not payment_claimed:
        Generation.objects.filter(pk=generation.pk, status=GenerationStatus.RUNNING).update(
            status=GenerationStatus.QUEUED, stage="retrying", error_code=code
        )
        logger.info("generation %s: retryable %s", generation.pk, type(exc).__name__)
        raise GenerationRetryableError(_RETRYABLE_MESSAGE, retry_after=exc.retry_after) from exc
    if code == "upstream_auth":
        logger.error(
            "generation %s: upstream refused our credentials (%s); check pymthouse settings",
            generation.pk,
            type(exc).__name__,
        )
    else:
        logger.warning("generation %s failed: %s (%s)", generation.pk, code, type(exc).__name__)
    detail = None
    if code == "invalid_request":
        detail = getattr(exc, "message", None) or getattr(exc, "description", None)
    generation_fail(generation_id=str(generation.pk), code=code, detail=detail)


def _generation_succeed(generation: Generation, result: InferenceResult) -> Generation:
    image = result.images[0]
    _set_stage(generation.pk, "saving")
    extension = IMAGE_EXTENSIONS.get(image.content_type, "png")
    generation.image.save(f"{generation.pk}.{extension}", ContentFile(image.content), save=False)
    now = timezone.now()
    updated = Generation.objects.filter(
        pk=generation.pk, status__in=[GenerationStatus.RUNNING, GenerationStatus.FAILED]
    ).update(
        status=GenerationStatus.SUCCEEDED,
        stage="done",
        image=generation.image.name,
        image_seed=image.seed,
        nsfw=image.nsfw,
        upstream_request_id=result.upstream_request_id or "",
        manifest_id=result.manifest_id or F("manifest_id"),
        runner_url=result.runner_url or F("runner_url"),
        error_code="",
        error_message="",
        finished_at=now,
    )
    if not updated:  # deleted or canceled meanwhile: drop the orphan file
        generation.image.storage.delete(generation.image.name or "")
        return generation
    generation.refresh_from_db()
    logger.info("generation %s succeeded", generation.pk)
    return generation


def _generation_fail_locked(
    generation: Generation, *, code: str, detail: str | None = None
) -> None:
    message = FAILURE_MESSAGES.get(code, FAILURE_MESSAGES["upstream_failed"])
    if detail:
        message = f"{message} ({detail.strip()[:200]})"
    generation.status = GenerationStatus.FAILED
    generation.stage = "done"
    generation.error_code = code
    generation.error_message = message[:500]
    generation.finished_at = timezone.now()
    generation.save(update_fields=["status", "stage", "error_code", "error_message", "finished_at"])


def generation_fail(*, generation_id: str, code: str, detail: str | None = None) -> None:
    """Record a terminal failure (unless the generation already finished)."""
    with transaction.atomic():
        generation = Generation.objects.select_for_update().filter(pk=generation_id).first()
        if generation is None or generation.is_finished:
            return
        _generation_fail_locked(generation, code=code, detail=detail)


# --- reconcile -----------------------------------------------------------------


def generations_reconcile(*, now: Any = None) -> dict[str, int]:
    """Re-enqueue queued generations whose message was lost; fail abandoned runs.

    A generation is re-enqueued when it has sat in ``queued`` longer than the
    longest retry backoff; re-enqueueing is safe because running is idempotent.
    A ``running`` generation older than the hard time limit (plus a margin) has
    no live worker: it is failed as ``interrupted``.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=15)
    stale_queued = list(
        Generation.objects.filter(status=GenerationStatus.QUEUED)
        .filter(
            Q(attempt_started_at__isnull=True, created_at__lt=cutoff)
            | Q(attempt_started_at__lt=cutoff)
        )
        .values_list("pk", flat=True)[:200]
    )
    for generation_id in stale_queued:
        generation_run_task.delay(str(generation_id))
    abandoned_before = now - timedelta(seconds=settings.INFERENCE_TIME_LIMIT + 120)
    abandoned = list(
        Generation.objects.filter(
            status=GenerationStatus.RUNNING, attempt_started_at__lt=abandoned_before
        ).values_list("pk", flat=True)[:200]
    )
    for generation_id in abandoned:
        generation_fail(generation_id=str(generation_id), code="interrupted")
    return {"requeued": len(stale_queued), "interrupted": len(abandoned)}
