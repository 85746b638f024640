"""The JSON API at /api/v1/ (django-ninja: pydantic schemas, OpenAPI built in).

django-ninja was picked over DRF + drf-spectacular because the project already
types its upstream payloads with pydantic, the API is small, and ninja serves
an accurate OpenAPI document from the same type hints with no extra package.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from accounts.errors import ApiKeyRateLimitedError
from billing.api import router as billing_router
from billing.errors import BillingError
from inference.api import router as inference_router

api = NinjaAPI(
    title="pixelhouse API",
    version="1.0.0",
    description=(
        "Generate images on Livepeer AI, billed per user through pymthouse.\n\n"
        "**Auth**: `Authorization: Bearer phk_…` (a personal key from Account → API).\n\n"
        "**Idempotency**: send `Idempotency-Key` on `POST /generations`; a retry with the "
        "same key and body is answered with the first response and charges nothing more.\n\n"
        "**Completion webhooks** (Account → API): on `generation.succeeded`, "
        "`generation.failed` and `generation.canceled` the generation is POSTed as "
        '`{"id": "evt_…", "type": …, "created": <unix seconds>, "data": <the generation>}` '
        "with `Pixelhouse-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is "
        'HMAC-SHA256(your signing secret, `"<t>.<raw body>"`). Compare in constant time, '
        "refuse a `t` older than 5 minutes, deduplicate on `id`; answer 2xx, or it is "
        "retried with backoff for a day. Examples: docs/api.md."
    ),
    urls_namespace="api-v1",
)
api.add_router("/", inference_router)
api.add_router("/billing", billing_router)


@api.exception_handler(BillingError)
def billing_error(request: HttpRequest, exc: BillingError) -> HttpResponse:
    """Billing refusals keep their status: out of credit is 402 Payment Required."""
    return api.create_response(
        request, {"code": exc.code, "detail": exc.message}, status=exc.status
    )


@api.exception_handler(RequestDataTooBig)
def body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    """A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is 413 with a JSON error, not a 400/500."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return api.create_response(
        request,
        {"code": "body_too_large", "detail": f"The request body is over {limit} bytes."},
        status=413,
    )


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Input the schema rejects is a 400 with one message per field."""
    errors: dict[str, str] = {}
    for error in exc.errors:
        location = [
            str(part)
            for part in error.get("loc", ())
            if part not in ("body", "payload", "query", "path")
        ]
        errors[".".join(location) or "body"] = str(error.get("msg", "Invalid value."))
    return api.create_response(request, {"detail": "Invalid input.", "errors": errors}, status=400)


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: Any) -> HttpResponse:
    """401 with the RFC 6750 challenge; why a token was refused is logged, not told."""
    response = api.create_response(request, {"detail": "Authentication required."}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="pixelhouse"'
    return response


@api.exception_handler(ApiKeyRateLimitedError)
def api_key_rate_limited(request: HttpRequest, exc: ApiKeyRateLimitedError) -> HttpResponse:
    """A personal API key over ``API_KEY_RATE_LIMIT_COUNT``: 429 with ``Retry-After``."""
    response = api.create_response(request, {"code": exc.code, "detail": exc.message}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response
