"""What the user is told for each ``FailureCode`` (inference.failure_codes).

Upstream detail never reaches users except for the network's own validation
message on ``INVALID_REQUEST``; ``INTERNAL_ERROR`` (a bug or a configuration
error on our side) says nothing about what went wrong internally.
"""

from __future__ import annotations

from inference.failure_codes import FailureCode

FAILURE_MESSAGES: dict[FailureCode, str] = {
    FailureCode.INSUFFICIENT_CREDIT: "You're out of credit. Add funds to keep generating images.",
    FailureCode.UPSTREAM_UNAVAILABLE: (
        "The image network is busy or unavailable right now. Please try again in a few minutes."
    ),
    FailureCode.UPSTREAM_AUTH: (
        "We couldn't authorize this generation with our billing provider. "
        "Our team has been notified."
    ),
    FailureCode.ACCOUNT_UNAVAILABLE: (
        "Your billing account isn't ready yet. Please try again shortly."
    ),
    FailureCode.INVALID_REQUEST: "The image network rejected this request.",
    FailureCode.MODEL_UNAVAILABLE: (
        "Nobody on the network is serving this model right now. Try another model."
    ),
    FailureCode.PRICE_EXCEEDED: "The network's price for this model is above our limit right now.",
    FailureCode.OUTCOME_UNKNOWN: (
        "We lost contact with the network while it was generating. "
        "You will not be charged twice; please try again."
    ),
    FailureCode.UPSTREAM_FAILED: (
        "The image network failed to deliver this image. Please try again."
    ),
    FailureCode.INTERRUPTED: "This generation was interrupted. Please try again.",
    FailureCode.ACCOUNT_CLOSED: (
        "This account was closed, so the image was canceled. Nothing was charged."
    ),
    FailureCode.TIMEOUT: "This generation took too long and was stopped. Please try again.",
    FailureCode.INTERNAL_ERROR: (
        "Something went wrong on our side and this image could not be generated. "
        "Our team has been notified; please try again."
    ),
}


def failure_message(code: str, detail: str | None = None) -> str:
    """What the user is told for ``code`` (a ``FailureCode``; an unknown one reads as
    ``upstream_failed``), with ``detail`` appended when given."""
    message = FAILURE_MESSAGES[FailureCode.of(code) or FailureCode.UPSTREAM_FAILED]
    if detail:
        message = f"{message} ({detail.strip()[:200]})"
    return message[:500]
