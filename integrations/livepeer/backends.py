"""Backend selection (``settings.INFERENCE_BACKEND``)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from integrations.livepeer.ai_gateway import AiGatewayBackend
from integrations.livepeer.config import LivepeerConfig, backend_name_from_settings
from integrations.livepeer.live_runner import LiveRunnerBackend
from integrations.livepeer.types import GatewayCredentials, InferenceBackend, Token

BACKENDS: dict[str, type[LiveRunnerBackend] | type[AiGatewayBackend]] = {
    LiveRunnerBackend.name: LiveRunnerBackend,
    AiGatewayBackend.name: AiGatewayBackend,
}


def get_backend(name: str | None = None) -> InferenceBackend:
    """The backend called ``name`` (default ``settings.INFERENCE_BACKEND``, "live-runner").

    Backends are stateless: each ``generate`` reads settings and opens its own HTTP
    session, so one instance may be shared between threads.
    """
    chosen = name or backend_name_from_settings()
    try:
        backend_class = BACKENDS[chosen]
    except KeyError as exc:
        raise ImproperlyConfigured(
            f"unknown inference backend {chosen!r}; expected one of: {', '.join(BACKENDS)}"
        ) from exc
    return backend_class()


def gateway_credentials(bearer_token: Token | None = None) -> GatewayCredentials:
    """Credentials for the configured AI gateway (``settings.LIVEPEER_GATEWAY_URL``).

    Pass a user token only when ``LIVEPEER_GATEWAY_HONOURS_USER_TOKENS`` is on.
    """
    return GatewayCredentials(
        gateway_url=LivepeerConfig.from_settings().gateway_url, bearer_token=bearer_token
    )
