"""Running one attempt of a generation.

Flow: ``attempt_start`` → pymthouse (mint a fresh per-request credential) →
Livepeer (discover, pay under the attempt's guard, generate) → ``attempt_succeed``.
Every outcome is recorded by this attempt before it returns or raises:

* a known upstream error → a failure code (``_FAILURE_CODES``), or back to
  ``queued`` with :class:`GenerationRetryableError` when retryable and nothing
  was paid;
* anything else (a bug, a ``DataError``, a configuration error, the soft time
  limit) → ``internal_error`` / ``timeout``, or ``outcome_unknown`` with the
  claim kept if the payment was claimed; the exception is re-raised for the
  task's log. Lost database connections are the exception: nothing can be
  written, so the task retries and the redelivered attempt resumes.
"""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from inference.errors import GenerationRetryableError, PaymentAlreadyClaimedError
from inference.models import FailureCode, Generation, GenerationStage
from inference.services.transitions import (
    AttemptPaymentGuard,
    attempt_requeue,
    attempt_start,
    attempt_succeed,
    generation_fail,
    generation_fail_unexpected,
    new_attempt_id,
    stage_set,
)
from integrations import livepeer
from integrations.livepeer import (
    GatewayCredentials,
    ImageRequest,
    LivepeerError,
    SignerCredentials,
    gateway_credentials,
)
from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseError,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    get_client,
)

logger = logging.getLogger("inference.services")

_RETRYABLE_MESSAGE = "The image network is temporarily unavailable; retrying."


def _credentials(
    generation: Generation, backend_name: str
) -> SignerCredentials | GatewayCredentials:
    """Mint a fresh per-request credential; it lives only in this call's memory."""
    client = get_client()
    external_user_id = generation.owner.external_user_id
    if backend_name == "ai-gateway":
        # go-livepeer's gateway ignores the user's token and pays with its own key
        # (docs/upstream.md): mint one only for a gateway configured as honouring it.
        if not settings.LIVEPEER_GATEWAY_HONOURS_USER_TOKENS:
            return gateway_credentials()
        try:
            token = client.mint_user_token(external_user_id=external_user_id)
        except PymthouseNotFoundError:
            # Not provisioned upstream yet: provision once, then mint once more.
            from accounts.services import user_provision

            user_provision(user_id=generation.owner_id)
            token = client.mint_user_token(external_user_id=external_user_id)
        return gateway_credentials(token.access_token)
    return SignerCredentials.from_signer_session(
        client.mint_signer_session(external_user_id=external_user_id)
    )


def generation_run(
    *,
    generation_id: str,
    attempt_id: str | None = None,
    backend_name: str | None = None,
) -> Generation | None:
    """Run one attempt of a generation. Idempotent: finished generations are left alone.

    ``attempt_id`` names the attempt (the task passes its message id; a redelivered
    message resumes its own attempt). Returns None when this attempt has nothing
    (more) to do. Raises :class:`GenerationRetryableError` for upstream hiccups that
    happened before any money moved (the generation is back in ``queued``).
    """
    attempt = attempt_id or new_attempt_id()
    backend = livepeer.get_backend(backend_name)
    generation = attempt_start(
        generation_id=generation_id, attempt_id=attempt, backend_name=backend.name
    )
    if generation is None:
        return None
    try:
        return _attempt_run(generation, attempt, backend)
    except (GenerationRetryableError, OperationalError, InterfaceError):
        raise
    except SoftTimeLimitExceeded:
        logger.warning("generation %s hit the soft time limit", generation.pk)
        generation_fail(
            generation_id=generation.pk,
            code=FailureCode.TIMEOUT,
            code_if_claimed=FailureCode.OUTCOME_UNKNOWN,
            attempt_id=attempt,
        )
        raise
    except Exception:
        # Anything unforeseen: end this attempt here, then let the task log it.
        logger.exception("generation %s: unexpected error", generation.pk)
        generation_fail_unexpected(generation_id=generation.pk, attempt_id=attempt)
        raise


def _attempt_run(
    generation: Generation, attempt: str, backend: livepeer.InferenceBackend
) -> Generation | None:
    request = ImageRequest(
        request_id=generation.gateway_request_id,
        model_id=generation.model_id,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        width=generation.width,
        height=generation.height,
        seed=generation.seed,
    )
    guard = AttemptPaymentGuard(
        generation_id=generation.pk,
        attempt_id=attempt,
        owner_id=generation.owner_id,
        model_id=generation.model_id,
    )
    try:
        try:
            credentials = _credentials(generation, backend.name)
            # A write of its own, unlike "saving": watchers on the embedded defaults (no
            # Redis, they read the row) show this step while discovery runs.
            stage_set(
                generation_id=generation.pk, attempt_id=attempt, stage=GenerationStage.CONNECTING
            )
            result = backend.generate(
                request, credentials=credentials, guard=guard, max_fee_wei=generation.max_fee_wei
            )
        except PaymentAlreadyClaimedError:
            logger.warning("generation %s: another attempt owns it; stopping", generation.pk)
            return None
        except (PymthouseError, LivepeerError) as exc:
            _attempt_upstream_error(generation, attempt, exc)
            return generation
        return attempt_succeed(
            generation=generation, attempt_id=attempt, result=result, guard=guard
        )
    finally:
        # A confirmed payment is charged whatever became of the row (the success write
        # and generation_fail charge it first, in their transactions; this is a no-op
        # then): e.g. the row was deleted while the paid call ran.
        guard.settle()


# First match wins. A pymthouse 400 means our request shape or configuration is
# wrong, which the user can do nothing about: reported like an auth failure.
_FAILURE_CODES: tuple[tuple[type[Exception], FailureCode], ...] = (
    (PymthouseInsufficientFundsError, FailureCode.INSUFFICIENT_CREDIT),
    (livepeer.LivepeerInsufficientBalanceError, FailureCode.INSUFFICIENT_CREDIT),
    (livepeer.LivepeerOutcomeUnknownError, FailureCode.OUTCOME_UNKNOWN),
    (livepeer.LivepeerPaidCallFailedError, FailureCode.UPSTREAM_FAILED),
    (livepeer.LivepeerPriceExceededError, FailureCode.PRICE_EXCEEDED),
    (livepeer.LivepeerModelUnavailableError, FailureCode.MODEL_UNAVAILABLE),
    (livepeer.LivepeerBadRequestError, FailureCode.INVALID_REQUEST),
    (livepeer.LivepeerAuthError, FailureCode.UPSTREAM_AUTH),
    (PymthouseAuthError, FailureCode.UPSTREAM_AUTH),
    (PymthouseBadRequestError, FailureCode.UPSTREAM_AUTH),
    (PymthouseNotFoundError, FailureCode.ACCOUNT_UNAVAILABLE),
)


def _failure_code(exc: PymthouseError | LivepeerError) -> FailureCode:
    for error_class, code in _FAILURE_CODES:
        if isinstance(exc, error_class):
            return code
    return FailureCode.UPSTREAM_UNAVAILABLE if exc.retryable else FailureCode.UPSTREAM_FAILED


def _attempt_upstream_error(
    generation: Generation, attempt: str, exc: PymthouseError | LivepeerError
) -> None:
    code = _failure_code(exc)
    if exc.retryable and attempt_requeue(
        generation_id=generation.pk, attempt_id=attempt, code=code
    ):
        logger.info("generation %s: retryable %s", generation.pk, type(exc).__name__)
        raise GenerationRetryableError(_RETRYABLE_MESSAGE, retry_after=exc.retry_after) from exc
    if code == FailureCode.UPSTREAM_AUTH:
        logger.error(
            "generation %s: upstream refused our credentials (%s); check pymthouse settings",
            generation.pk,
            type(exc).__name__,
        )
    else:
        logger.warning("generation %s failed: %s (%s)", generation.pk, code, type(exc).__name__)
    detail = None
    if code == FailureCode.INVALID_REQUEST:
        detail = getattr(exc, "message", None) or getattr(exc, "description", None)
    generation_fail(generation_id=generation.pk, code=code, detail=detail, attempt_id=attempt)
