"""Failure codes of a generation and what the user is told for each.

Upstream detail never reaches users except for the network's own validation
message on ``invalid_request``; ``internal_error`` (a bug or a configuration
error on our side) says nothing about what went wrong internally.
"""

from __future__ import annotations

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
    "account_closed": "This account was closed, so the image was canceled. Nothing was charged.",
    "timeout": "This generation took too long and was stopped. Please try again.",
    "internal_error": (
        "Something went wrong on our side and this image could not be generated. "
        "Our team has been notified; please try again."
    ),
}


#: Shown instead of the code's message when a paid call delivered no image and its charge
#: was refunded (any code but ``outcome_unknown``; ``BILLING_CHARGE_UNDELIVERED`` off).
UNDELIVERED_REFUNDED_MESSAGE = "The network failed to deliver this image; you were not charged."


def failure_message(code: str, detail: str | None = None, *, refunded: bool = False) -> str:
    if refunded:
        message = UNDELIVERED_REFUNDED_MESSAGE
    else:
        message = FAILURE_MESSAGES.get(code, FAILURE_MESSAGES["upstream_failed"])
    if detail:
        message = f"{message} ({detail.strip()[:200]})"
    return message[:500]
