"""Why a generation ended without an image: the one vocabulary of ``Generation.error_code``.

Stored on the row, returned by the API as ``error.code``, and the key of what the user
is told (``inference.services.failures``) and of the extra guidance on the detail page
(``inference.views``). Importable without the app registry (``inference.models``
re-exports it).
"""

from __future__ import annotations

from django.db import models


class FailureCode(models.TextChoices):
    INSUFFICIENT_CREDIT = "insufficient_credit", "Insufficient credit"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable", "Upstream unavailable"
    UPSTREAM_AUTH = "upstream_auth", "Upstream refused our credentials"
    ACCOUNT_UNAVAILABLE = "account_unavailable", "Billing account unavailable"
    INVALID_REQUEST = "invalid_request", "Invalid request"
    MODEL_UNAVAILABLE = "model_unavailable", "Model unavailable"
    PRICE_EXCEEDED = "price_exceeded", "Price above our limit"
    #: A payment was claimed (a ticket may have been spent) and the result never came:
    #: the claim is kept, so it is never paid again; billing resolves it from usage.
    OUTCOME_UNKNOWN = "outcome_unknown", "Outcome unknown (paid, no answer)"
    UPSTREAM_FAILED = "upstream_failed", "Upstream failed"
    INTERRUPTED = "interrupted", "Interrupted"
    ACCOUNT_CLOSED = "account_closed", "Account closed"
    TIMEOUT = "timeout", "Timed out"
    INTERNAL_ERROR = "internal_error", "Internal error"

    @classmethod
    def of(cls, value: str) -> FailureCode | None:
        """The code stored as ``value``; None when empty or not a known code."""
        try:
            return cls(value)
        except ValueError:
            return None
