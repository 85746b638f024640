"""The one client of Livepeer remote signers, live runners and AI gateways.

Usage (the inference service)::

    from integrations.livepeer import ImageRequest, SignerCredentials, get_backend

    backend = get_backend()                      # settings.INFERENCE_BACKEND
    result = backend.generate(
        request, credentials=credentials, guard=guard, max_fee_wei=ceiling_wei
    )

``live-runner`` (default) needs :class:`SignerCredentials` (build them with
``SignerCredentials.from_signer_session(pymthouse_signer_session)``); ``ai-gateway``
needs :class:`GatewayCredentials` (``gateway_credentials()``; a user token only for a
gateway that honours one: go-livepeer's pays with its own key and charges nobody).
Errors are :class:`LivepeerError` subclasses; retry exactly when ``exc.retryable``.

``max_fee_wei`` (optional, ``None`` = no per-image ceiling) is the most this image's one
payment may cost at the network, in wei. ``live-runner`` never pays a runner whose
expected fee is above it (:class:`PriceExceededError` when none is within it, before
anything is claimed) and caps the signer's ``maxPrice`` at it, so a price that rises
after the check is refused by the signer (481). ``ai-gateway`` cannot enforce it.
"""

from __future__ import annotations

from integrations.livepeer.backends import gateway_credentials, get_backend
from integrations.livepeer.errors import (
    LivepeerAuthError,
    LivepeerBadRequestError,
    LivepeerError,
    LivepeerInsufficientBalanceError,
    LivepeerModelUnavailableError,
    LivepeerOutcomeUnknownError,
    LivepeerPaidCallFailedError,
    LivepeerPriceExceededError,
    LivepeerProtocolError,
    LivepeerRateLimitedError,
    LivepeerUnavailableError,
    PriceExceededError,
)
from integrations.livepeer.types import (
    GatewayCredentials,
    GeneratedImage,
    ImageRequest,
    InferenceBackend,
    InferenceResult,
    PaymentGuard,
    PaymentRecord,
    SignerCredentials,
)

__all__ = [
    "GatewayCredentials",
    "GeneratedImage",
    "ImageRequest",
    "InferenceBackend",
    "InferenceResult",
    "LivepeerAuthError",
    "LivepeerBadRequestError",
    "LivepeerError",
    "LivepeerInsufficientBalanceError",
    "LivepeerModelUnavailableError",
    "LivepeerOutcomeUnknownError",
    "LivepeerPaidCallFailedError",
    "LivepeerPriceExceededError",
    "LivepeerProtocolError",
    "LivepeerRateLimitedError",
    "LivepeerUnavailableError",
    "PaymentGuard",
    "PaymentRecord",
    "PriceExceededError",
    "SignerCredentials",
    "gateway_credentials",
    "get_backend",
]
