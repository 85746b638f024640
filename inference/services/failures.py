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


#: Shown instead of the code's message when a paid call delivered no image and its charge
#: was refunded (any code but ``outcome_unknown``; ``BILLING_CHARGE_UNDELIVERED`` off).
UNDELIVERED_REFUNDED_MESSAGE = "The network failed to deliver this image; you were not charged."


def failure_message(code: str, detail: str | None = None, *, refunded: bool = False) -> str:
    """What the user is told for ``code`` (a ``FailureCode``; an unknown one reads as
    ``upstream_failed``), with ``detail`` appended when given; a refunded undelivered
    image says so instead."""
    if refunded:
        message = UNDELIVERED_REFUNDED_MESSAGE
    else:
        message = FAILURE_MESSAGES[FailureCode.of(code) or FailureCode.UPSTREAM_FAILED]
    if detail:
        message = f"{message} ({detail.strip()[:200]})"
    return message[:500]
