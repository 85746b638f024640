"""Domain errors of the inference app, each with a stable machine code.

Views, the API and tasks turn them into responses or failure records.
"""

from __future__ import annotations

from typing import Any


class GenerationError(Exception):
    code = "generation_error"

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class GenerationValidationError(GenerationError):
    """Bad input; ``field_errors`` maps field names to messages."""

    code = "invalid_input"

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__("Please correct the highlighted fields.", extra=field_errors)
        self.field_errors = field_errors


class GenerationRateLimitedError(GenerationError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, extra={"retry_after": retry_after})
        self.retry_after = retry_after


class GenerationAdmissionRefusedError(GenerationError):
    """The admission step refused the submission (the API answers 402).

    ``code`` names the reason (e.g. ``insufficient_credit``); ``message`` is shown to
    the user as is. Other apps' refusals (billing's credit hold) are raised as, or
    converted to, this type in ``inference.services.admission.generation_admit_step``.
    """

    code = "admission_refused"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class GenerationConflictError(GenerationError):
    code = "conflict"


class GenerationRetryableError(GenerationError):
    """An upstream hiccup before any money moved: the task may run it again."""

    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PaymentAlreadyClaimedError(GenerationError):
    """Another attempt already claimed (and may have spent) this generation's payment."""

    code = "payment_already_claimed"


class IdempotencyKeyError(GenerationError):
    """An ``Idempotency-Key`` that cannot be honoured; ``status`` is the API's answer."""

    status = 400


class IdempotencyKeyInvalidError(IdempotencyKeyError):
    code = "idempotency_key_invalid"


class IdempotencyKeyInUseError(IdempotencyKeyError):
    """Another request with this key is still executing (409: retry later)."""

    code = "idempotency_key_in_use"
    status = 409


class IdempotencyKeyReusedError(IdempotencyKeyError):
    """The key was first used with a different request (422, as Stripe answers)."""

    code = "idempotency_key_reused"
    status = 422


class GenerationAlreadyPaidError(GenerationConflictError):
    """Cancel refused: the payment was claimed (a ticket may be spent on the network)."""

    code = "already_paid"


class GenerationFinishedError(GenerationConflictError):
    """Cancel refused: the generation already finished."""

    code = "finished"


class GenerationNotRetryableError(GenerationConflictError):
    """Retry refused: only a failed or canceled generation is retried."""

    code = "not_retryable"
