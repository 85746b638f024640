"""Backend selection, value-type validation and the HTTP session's invariants."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured

from integrations.livepeer import (
    GatewayCredentials,
    ImageRequest,
    SignerCredentials,
    get_backend,
)
from integrations.livepeer.ai_gateway import AiGatewayBackend
from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.live_runner import LiveRunnerBackend
from integrations.livepeer.session import LivepeerSession, was_not_sent
from integrations.pymthouse import SecretToken
from tests.integrations.livepeer.conftest import RecordingGuard, image_request
from tests.sandbox_server import SandboxControl, free_port


def test_default_backend_is_live_runner() -> None:
    # The default lives in config/settings.py (INFERENCE_BACKEND), not in the client.
    backend = get_backend()
    assert isinstance(backend, LiveRunnerBackend)
    assert backend.name == "live-runner"


def test_backend_from_settings_and_by_name(settings: Any) -> None:
    settings.INFERENCE_BACKEND = "ai-gateway"
    assert isinstance(get_backend(), AiGatewayBackend)
    assert get_backend("live-runner").name == "live-runner"


def test_unknown_backend_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown inference backend 'studio'"):
        get_backend("studio")


def test_backends_refuse_the_wrong_credentials() -> None:
    signer = SignerCredentials(
        signer_url="http://127.0.0.1:9/signer",
        discovery_url="http://127.0.0.1:9/signer/discover-orchestrators",
        access_token="t",
    )
    gateway = GatewayCredentials(gateway_url="http://127.0.0.1:9", bearer_token="t")
    guard = RecordingGuard()
    with pytest.raises(TypeError, match="SignerCredentials"):
        get_backend("live-runner").generate(image_request(), credentials=gateway, guard=guard)
    with pytest.raises(TypeError, match="GatewayCredentials"):
        get_backend("ai-gateway").generate(image_request(), credentials=signer, guard=guard)
    assert guard.calls == []


def test_credentials_hide_their_tokens() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.payload.signature-0123456789"
    signer = SignerCredentials(
        signer_url="http://127.0.0.1:9/signer",
        discovery_url="http://127.0.0.1:9/d",
        access_token=SecretToken(secret),
    )
    gateway = GatewayCredentials(gateway_url="http://127.0.0.1:9", bearer_token=secret)
    assert secret not in repr(signer)
    assert secret not in repr(gateway)
    assert secret not in str(signer)


@pytest.mark.parametrize(
    "overrides",
    [
        {"width": 0},
        {"height": -8},
        {"width": 8.0},
        {"request_id": ""},
        {"model_id": ""},
        {"seed": "1"},
    ],
)
def test_image_request_validation(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        image_request(**overrides)


def test_image_request_pixels() -> None:
    request = ImageRequest(
        request_id="g", model_id="m", prompt="p", negative_prompt="", width=64, height=32, seed=None
    )
    assert request.pixels == 2048


def test_credentials_require_http_urls() -> None:
    with pytest.raises(ValueError, match="gateway_url"):
        GatewayCredentials(gateway_url="file:///tmp", bearer_token="t")
    with pytest.raises(ValueError, match="bearer token"):
        GatewayCredentials(gateway_url="http://127.0.0.1:9", bearer_token="")
    # No token at all is valid: go-livepeer's gateway ignores one anyway.
    assert GatewayCredentials(gateway_url="http://127.0.0.1:9").bearer_token is None
    with pytest.raises(ValueError, match="visible ASCII") as excinfo:
        GatewayCredentials(gateway_url="http://127.0.0.1:9", bearer_token="abc\r\nX: secret")
    assert "secret" not in str(excinfo.value)


def test_config_reads_settings_with_defaults(settings: Any) -> None:
    # The defaults live in config/settings.py only (tests/settings.py overrides some).
    import config.settings as project_settings

    config = LivepeerConfig.from_settings(project_settings)
    assert config.signer_timeout == (3.05, 15.0)
    assert config.inference_timeout == (3.05, 120.0)
    assert config.queue_poll_interval == 1.0
    assert config.queue_timeout == 120.0
    assert config.max_image_bytes == 20_000_000
    assert str(config.max_price_markup) == "1.012"
    assert config.max_response_bytes == 1_000_000
    assert config.max_result_bytes == 1_000_000 + 20_000_000 * 4 // 3 + 4
    # Production defaults: private addresses refused, no user token for a gateway.
    assert config.allow_private_addresses is False
    assert config.gateway_honours_user_tokens is False
    assert config.runner_app_path == ""

    settings.LIVEPEER_MAX_PRICE_MARKUP = "0.9"
    with pytest.raises(ImproperlyConfigured, match="MARKUP"):
        LivepeerConfig.from_settings()


def test_session_never_follows_redirects(sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", "/redirect-me", status=302, headers={"Location": "/api/v1/health"})
    with LivepeerSession(default_timeout=(2.0, 2.0)) as http:
        response = http.get(f"{sandbox.url}/redirect-me", allow_redirects=True)
    assert response.status_code == 302
    assert [r["path"] for r in sandbox.requests()] == ["/redirect-me"]


def test_refused_connection_counts_as_not_sent() -> None:
    with LivepeerSession(default_timeout=(2.0, 2.0)) as http:
        with pytest.raises(requests.ConnectionError) as excinfo:
            http.post(f"http://127.0.0.1:{free_port()}/x", json={})
    assert was_not_sent(excinfo.value) is True


def test_dropped_connection_counts_as_sent(sandbox: SandboxControl) -> None:
    sandbox.add_fault("POST", "/drop-me", drop=True)
    with LivepeerSession(default_timeout=(2.0, 2.0)) as http:
        with pytest.raises(requests.ConnectionError) as excinfo:
            http.post(f"{sandbox.url}/drop-me", json={})
    assert was_not_sent(excinfo.value) is False


def test_read_timeout_counts_as_sent(sandbox: SandboxControl) -> None:
    sandbox.add_fault("POST", "/slow", delay=1.0)
    with LivepeerSession(default_timeout=(2.0, 0.2)) as http:
        with pytest.raises(requests.ReadTimeout) as excinfo:
            http.post(f"{sandbox.url}/slow", json={})
    assert was_not_sent(excinfo.value) is False
