"""The one client of Livepeer remote signers, live runners and AI gateways.

Usage (the inference service)::

    from integrations.livepeer import ImageRequest, SignerCredentials, get_backend

    backend = get_backend()                      # settings.INFERENCE_BACKEND
    result = backend.generate(request, credentials=credentials, guard=guard)

``live-runner`` (default) needs :class:`SignerCredentials` (build them with
``SignerCredentials.from_signer_session(pymthouse_signer_session)``); ``ai-gateway``
needs :class:`GatewayCredentials` (``gateway_credentials()``; a user token only for a
gateway that honours one: go-livepeer's pays with its own key and charges nobody).
Errors are :class:`LivepeerError` subclasses; retry exactly when ``exc.retryable``.
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
    "SignerCredentials",
    "gateway_credentials",
    "get_backend",
]
