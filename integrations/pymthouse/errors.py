"""The pymthouse client's error tree (house style R9).

::

    PymthouseError
    ├── PymthouseAuthError              401/403, the usage routes' deliberate 404
    │   └── PymthouseConfigurationError discovery issuer mismatch, unexpected redirect
    ├── PymthouseInsufficientFundsError 402 (``reason`` says why)
    ├── PymthouseNotFoundError          404 ``not_found`` / ``User not found``
    ├── PymthouseRateLimitedError       429 (retryable; ``retry_after`` from the header)
    ├── PymthouseUnavailableError       5xx, connection refused/reset/dropped (retryable)
    │   └── PymthouseBillingUnavailableError  billing routes' 503 (no OpenMeter/Stripe)
    ├── PymthouseTimeoutError           connect/read timeout, 408 (retryable)
    ├── PymthouseBadRequestError        400 and any other 4xx
    │   ├── PymthouseOwnerWalletError   the app is owner_rollup: end users cannot pay
    │   └── PymthouseBillingConflictError     billing routes' 409
    │       ├── PymthouseConnectNotReadyError Stripe Connect not ready (409, 403)
    │       └── PymthousePaymentMethodRequiredError  save a card first (409)
    └── PymthouseProtocolError          a 2xx whose body we cannot parse (JSON, money)

Callers catch the narrowest class; Celery tasks retry exactly when ``exc.retryable``.
Messages carry the method, the path (never the query string), the status, the upstream
``code``/``description``/``reason``/``correlation_id``, and nothing else: no headers, no
request body, no token.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

import requests

from integrations.http import MAX_ERROR_BODY_BYTES, error_repr, printable
from integrations.http import parse_retry_after as parse_retry_after  # re-exported

#: ``error`` values that are machine codes (``invalid_client``), not prose (``Not found``).
#: Same rule as the official SDK's ``httpError`` (docs/upstream.md §P7).
_MACHINE_CODE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_MAX_DESCRIPTION_CHARS = 300


class PymthouseError(Exception):
    """Base class. ``retryable`` says whether repeating the same call may succeed."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        description: str | None = None,
        correlation_id: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.description = description
        self.correlation_id = correlation_id
        self.reason = reason
        self.retry_after = retry_after
        self.method = method
        self.path = path

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        fields = {
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
            "retry_after": self.retry_after,
        }
        return error_repr(self, self.message, fields)


class PymthouseAuthError(PymthouseError):
    """Our credentials or tenant are wrong (401/403, the usage routes' 404). Terminal."""


class PymthouseConfigurationError(PymthouseAuthError):
    """Settings disagree with the server (issuer mismatch, redirects). Terminal."""


class PymthouseInsufficientFundsError(PymthouseError):
    """402: the end user cannot spend. ``reason`` is e.g. ``no_payment_method``."""


class PymthouseNotFoundError(PymthouseError):
    """404 ``not_found`` / ``User not found``: missing or inactive user. Terminal."""


class PymthouseRateLimitedError(PymthouseError):
    """429. Retry no earlier than ``retry_after`` seconds (when given)."""

    retryable: ClassVar[bool] = True


class PymthouseUnavailableError(PymthouseError):
    """5xx (incl. 503 "OpenMeter not configured") or a refused/reset/dropped connection."""

    retryable: ClassVar[bool] = True


class PymthouseTimeoutError(PymthouseError):
    """Connect or read timeout. The server may or may not have acted on the request."""

    retryable: ClassVar[bool] = True


class PymthouseBadRequestError(PymthouseError):
    """400 or any other 4xx without a more specific class. Terminal."""


class PymthouseBillingUnavailableError(PymthouseUnavailableError):
    """A billing route's 503: hosted billing (OpenMeter/Stripe) is not configured or not
    reachable (``Billing is not available right now``, ``openmeter_unavailable``)."""


class PymthouseOwnerWalletError(PymthouseBadRequestError):
    """The app is in ``owner_rollup``: pymthouse bills the owner's wallet, so end-user
    retail billing is refused (400 ``owner_wallet_not_app_user``, 409
    ``auto_topup_merchant_only``). Terminal until the app is switched to merchant."""


class PymthouseBillingConflictError(PymthouseBadRequestError):
    """A billing route's 409 (e.g. ``Customer already has an active subscription``)."""


class PymthouseConnectNotReadyError(PymthouseBillingConflictError):
    """The operator's Stripe Connect account cannot take payments yet (409 ``Merchant
    Stripe Connect is not ready to accept payments``, 403 ``…onboarding is required``)."""


class PymthousePaymentMethodRequiredError(PymthouseBillingConflictError):
    """409 ``payment_method_required`` / ``A payment method is required …``: the end
    user must save a card (setup Checkout) first."""


class PymthouseProtocolError(PymthouseError):
    """The response does not have the contract's shape (non-JSON, bad money string)."""


def describe(
    *,
    method: str,
    path: str,
    status: int | None,
    code: str | None = None,
    description: str | None = None,
    reason: str | None = None,
    correlation_id: str | None = None,
    detail: str | None = None,
) -> str:
    """One-line message for an exception. Only ever given non-secret parts."""
    head = f"pymthouse {method} {path}"
    if status is not None:
        head += f": HTTP {status}"
    parts = [head]
    if code:
        parts.append(code)
    if description and description != code:
        parts.append(f"- {description}")
    if detail:
        parts.append(f"- {detail}")
    extras = [f"reason={reason}"] if reason else []
    if correlation_id:
        extras.append(f"correlation_id={correlation_id}")
    if extras:
        parts.append(f"({', '.join(extras)})")
    return " ".join(parts)


def _clean(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return printable(value.strip())[:_MAX_DESCRIPTION_CHARS]


def _error_body(response: requests.Response) -> dict[str, object]:
    """The error body as a dict, or ``{}`` for HTML pages, empty or malformed bodies."""
    content_type = response.headers.get("Content-Type", "").lower()
    content = response.content[:MAX_ERROR_BODY_BYTES]
    if "json" not in content_type and not content.lstrip().startswith(b"{"):
        return {}
    try:
        parsed = json.loads(content)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def error_from_response(
    response: requests.Response,
    *,
    method: str,
    path: str,
    not_found_is_auth: bool = False,
) -> PymthouseError:
    """Map a non-2xx response to the error tree.

    The class is chosen from the status alone; the body (OAuth JSON, ``{error}`` JSON,
    problem+json, or an HTML error page) only supplies the details:

    * ``code``: body ``code``, else body ``error`` when it is a snake_case machine code;
    * ``description``: ``error_description``, else ``error``, ``message``, ``detail``,
      ``title``;
    * ``reason`` and ``correlation_id`` are passed through (``correlation_id`` may also
      come from an ``X-Correlation-Id`` header).

    ``not_found_is_auth``: the usage/balance/identities routes answer every auth or
    tenant failure with 404 ``{"error":"Not found"}`` (anti-enumeration), so there a
    404 means misconfigured credentials, not missing data.
    """
    status = response.status_code
    body = _error_body(response)
    raw_error = body.get("error")
    code = _clean(body.get("code"))
    if code is None and isinstance(raw_error, str) and _MACHINE_CODE.fullmatch(raw_error):
        code = raw_error
    description = None
    for key in ("error_description", "error", "message", "detail", "title"):
        description = _clean(body.get(key))
        if description is not None:
            break
    reason = _clean(body.get("reason"))
    correlation_id = _clean(body.get("correlation_id")) or _clean(
        response.headers.get("X-Correlation-Id")
    )
    retry_after = parse_retry_after(response.headers.get("Retry-After"))

    error_class: type[PymthouseError]
    detail = None
    if 300 <= status < 400:
        error_class = PymthouseConfigurationError
        detail = "unexpected redirect; check PYMTHOUSE_URL / PYMTHOUSE_ISSUER"
    elif status in (401, 403):
        error_class = PymthouseAuthError
    elif status == 402:
        error_class = PymthouseInsufficientFundsError
    elif status == 404:
        error_class = PymthouseAuthError if not_found_is_auth else PymthouseNotFoundError
        if not body:
            detail = "no such route; check PYMTHOUSE_URL"
    elif status == 408:
        error_class = PymthouseTimeoutError
    elif status == 429:
        error_class = PymthouseRateLimitedError
    elif 400 <= status < 500:
        error_class = PymthouseBadRequestError
    elif status >= 500:
        error_class = PymthouseUnavailableError
    else:
        error_class = PymthouseProtocolError
        detail = "unexpected status"
    message = describe(
        method=method,
        path=path,
        status=status,
        code=code,
        description=description,
        reason=reason,
        correlation_id=correlation_id,
        detail=detail,
    )
    return error_class(
        message,
        status=status,
        code=code,
        description=description,
        correlation_id=correlation_id,
        reason=reason,
        retry_after=retry_after,
        method=method,
        path=path,
    )
