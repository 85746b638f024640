"""The Livepeer client's error tree (house style R9).

::

    LivepeerError
    ├── LivepeerUnavailableError          retryable: 5xx, connect errors, no runner answered,
    │                                     empty discovery, 480 refreshes exhausted
    ├── LivepeerRateLimitedError          retryable: 429 (``retry_after`` from the header)
    ├── LivepeerModelUnavailableError     terminal: no orchestrator serves the model
    ├── LivepeerBadRequestError           terminal: 400/422 and any other unmapped 4xx
    ├── LivepeerAuthError                 terminal: 401/403 (bad or expired token)
    ├── LivepeerPriceExceededError        terminal: signer 481
    │   └── PriceExceededError            terminal: every runner's fee is above this
    │                                     image's ceiling (``max_fee_wei``); nothing sent
    ├── LivepeerInsufficientBalanceError  terminal: signer 483, gateway 402
    ├── LivepeerOutcomeUnknownError       terminal: a request that may have spent money got
    │                                     no answer (read timeout, 504); never pay again
    ├── LivepeerPaidCallFailedError       terminal: paid, but no usable result came back
    └── LivepeerProtocolError             terminal: a body or status outside the contract

``retryable`` says whether the *same* ``generate`` call may succeed later; the caller's
task retries exactly when it is true. Messages carry the upstream role, method, URL
path, status and the upstream's own message, and nothing else: never a token, a
payment, segment credentials or a header value.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import requests

from integrations.http import MAX_ERROR_BODY_BYTES, error_repr, printable
from integrations.http import parse_retry_after as parse_retry_after  # re-exported

_MAX_MESSAGE_CHARS = 300


class LivepeerError(Exception):
    """Base class. ``retryable`` says whether repeating the same call may succeed."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        fields = {
            "status": self.status,
            "code": self.code,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
        }
        return error_repr(self, self.message, fields)


class LivepeerUnavailableError(LivepeerError):
    """Nothing was spent and a later attempt may succeed (5xx, connect error, no runner)."""

    retryable: ClassVar[bool] = True


class LivepeerRateLimitedError(LivepeerError):
    """429. Retry no earlier than ``retry_after`` seconds (when given)."""

    retryable: ClassVar[bool] = True


class LivepeerModelUnavailableError(LivepeerError):
    """Discovery answered, but no orchestrator serves this model (single-shot)."""


class LivepeerBadRequestError(LivepeerError):
    """The request was refused as invalid (400/422, other 4xx); repeating will not help."""


class LivepeerAuthError(LivepeerError):
    """401/403: the signer JWT or user token is invalid, expired or lacks ``sign:job``."""


class LivepeerPriceExceededError(LivepeerError):
    """Signer 481: the orchestrator's price is above our ``maxPrice``."""


class PriceExceededError(LivepeerPriceExceededError):
    """No runner's expected fee is within this image's ceiling (``max_fee_wei``).

    Raised before any payment is claimed: no claim, no signer call, no ticket. A
    subclass of :class:`LivepeerPriceExceededError`, so code handling the signer's 481
    handles it too; ``code`` is always ``"price_exceeded"``.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message, code="price_exceeded", request_id=request_id)


class LivepeerInsufficientBalanceError(LivepeerError):
    """Signer 483 (gateway 402): the end user cannot spend."""


class LivepeerOutcomeUnknownError(LivepeerError):
    """A request that may spend money was sent and got no answer.

    A ticket may have been issued (or a gateway may have paid). Never pay again for
    this request id; settle from the usage API by ``gatewayRequestId``.
    """


class LivepeerPaidCallFailedError(LivepeerError):
    """Money was spent (a ticket was issued) but no usable result came back."""


class LivepeerProtocolError(LivepeerError):
    """A response outside the contract: unparseable body, unexpected status or URL."""


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = printable(value).strip()
    # go-livepeer's parseBadRequestError prefixes re-wrapped runner 400s with ": ".
    while text.startswith(":"):
        text = text[1:].lstrip()
    return text[:_MAX_MESSAGE_CHARS] or None


def _describe_item(item: object) -> str | None:
    """One entry of a ``detail[]`` (FastAPI 422) or ``errors[]`` (Studio) list."""
    if isinstance(item, str):
        return _clean(item)
    if isinstance(item, dict):
        message = _clean(item.get("msg")) or _clean(item.get("message"))
        loc = item.get("loc")
        if message and isinstance(loc, list) and loc:
            return f"{'.'.join(str(part) for part in loc)}: {message}"
        return message
    return None


def envelope_message(body: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` from any of the four Livepeer error envelopes.

    * go-livepeer: ``{"error": {"message": …}}`` (also a plain ``{"error": "…"}``);
    * ai-runner: ``{"detail": {"msg": …}}``;
    * FastAPI 422: ``{"detail": [{"loc": […], "msg": …}, …]}``;
    * Livepeer Studio: ``{"errors": ["…", …]}``.
    """
    if not isinstance(body, dict):
        return None, None
    code: str | None = None
    message: str | None = None
    error = body.get("error")
    detail = body.get("detail")
    errors = body.get("errors")
    if isinstance(error, dict):
        message = _clean(error.get("message")) or _clean(error.get("msg"))
        code = _clean(error.get("code"))
    elif isinstance(error, str):
        message = _clean(error)
    if message is None and isinstance(detail, dict):
        message = _clean(detail.get("msg")) or _clean(detail.get("message"))
    elif message is None and isinstance(detail, str):
        message = _clean(detail)
    elif message is None and isinstance(detail, list):
        parts = [part for part in (_describe_item(item) for item in detail) if part]
        message = "; ".join(parts)[:_MAX_MESSAGE_CHARS] or None
    if message is None and isinstance(errors, list):
        parts = [part for part in (_describe_item(item) for item in errors) if part]
        message = "; ".join(parts)[:_MAX_MESSAGE_CHARS] or None
    if message is None:
        message = _clean(body.get("message"))
    if code is None:
        code = _clean(body.get("code"))
    return code, message


def response_message(response: requests.Response) -> tuple[str | None, str | None]:
    """``(code, message)`` of an error response; plain-text bodies give a short message."""
    content = response.content[:MAX_ERROR_BODY_BYTES]
    if not content.strip():
        return None, None
    try:
        body = json.loads(content)
    except ValueError:
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith("text/plain"):
            return None, _clean(content.decode("utf-8", errors="replace"))
        return None, None
    return envelope_message(body)


def describe(
    *,
    upstream: str,
    method: str,
    path: str,
    status: int | None,
    message: str | None = None,
    detail: str | None = None,
) -> str:
    """A one-line exception message built only from non-secret parts."""
    text = f"livepeer {upstream} {method} {path}"
    if status is not None:
        text += f": HTTP {status}"
    if message:
        text += f" - {message}"
    if detail:
        text += f" ({detail})"
    return text


def error_for_status(
    response: requests.Response,
    *,
    upstream: str,
    method: str,
    path: str,
    request_id: str | None,
    detail: str | None = None,
) -> LivepeerError:
    """Map a non-2xx response to the generic part of the tree.

    The class comes from the status alone (R9: status before body); callers handle the
    statuses with a flow-specific meaning (signer 48x, runner 402, 504) before this.
    """
    status = response.status_code
    code, message = response_message(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    error_class: type[LivepeerError]
    if status in (401, 403):
        error_class = LivepeerAuthError
    elif status == 429:
        error_class = LivepeerRateLimitedError
    elif 400 <= status < 500:
        error_class = LivepeerBadRequestError
    elif status >= 500:
        error_class = LivepeerUnavailableError
    else:
        error_class = LivepeerProtocolError
        detail = detail or "unexpected status"
    return error_class(
        describe(
            upstream=upstream,
            method=method,
            path=path,
            status=status,
            message=message,
            detail=detail,
        ),
        status=status,
        code=code,
        retry_after=retry_after,
        request_id=request_id,
    )
