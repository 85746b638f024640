"""The ai-gateway backend over real HTTP against the sandbox's go-livepeer gateway."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from integrations.livepeer import (
    GatewayCredentials,
    LivepeerBadRequestError,
    LivepeerOutcomeUnknownError,
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    LivepeerRateLimitedError,
    LivepeerUnavailableError,
    get_backend,
)
from integrations.livepeer import gateway_credentials as configured_gateway_credentials
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    GATEWAY_PATH,
    RecordingGuard,
    calls,
    image_request,
)
from tests.sandbox_server import SandboxControl, free_port

pytestmark = pytest.mark.django_db


def generate(credentials: GatewayCredentials, guard: RecordingGuard, **overrides: Any) -> Any:
    request = image_request(**overrides)
    return request, get_backend("ai-gateway").generate(
        request, credentials=credentials, guard=guard
    )


def generate_error(
    credentials: GatewayCredentials,
    guard: RecordingGuard,
    error: type[Exception],
    **overrides: Any,
) -> Any:
    request = image_request(**overrides)
    with pytest.raises(error) as excinfo:
        get_backend("ai-gateway").generate(request, credentials=credentials, guard=guard)
    return request, excinfo.value


def stream_gets(sandbox: SandboxControl) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests("/stream/") if r["path"].startswith("/stream/")]


def test_happy_path_downloads_the_relative_stream_url(
    sandbox: SandboxControl,
    gateway_credentials: GatewayCredentials,
    guard: RecordingGuard,
    external_user_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    request, result = generate(gateway_credentials, guard, width=768, height=512, seed=42)

    assert len(result.images) == 1
    image = result.images[0]
    assert image.content_type == "image/png"
    assert png_size(image.content) == (768, 512)
    assert image.seed == 42
    assert image.nsfw is False
    assert result.tickets_paid == 0
    assert result.runner_url is None
    assert result.manifest_id is None
    assert re.fullmatch(r"[0-9a-f]{8}", result.upstream_request_id or "")

    assert guard.calls == ["claim", "confirm"]
    assert guard.confirmed == [(None, None)]
    assert guard.records[0].expected_fee_wei is None  # the gateway never tells the price
    # The gateway pays with its own key: no usage event for any user.
    assert sandbox.events() == []

    posts = calls(sandbox, GATEWAY_PATH)
    assert [(r["status"], r["auth"]) for r in posts] == [(200, None)]
    gets = stream_gets(sandbox)
    assert len(gets) == 1
    assert gets[0]["path"].startswith(f"/stream/{result.upstream_request_id}/")
    # The user's token is not sent along with image downloads.
    assert gets[0]["auth"] is None
    assert request.request_id in caplog.text


def test_a_fee_ceiling_is_accepted_but_not_enforced_by_the_gateway(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    """The gateway pays with its own key: a ceiling of 1 wei changes nothing here."""
    result = get_backend("ai-gateway").generate(
        image_request(), credentials=gateway_credentials, guard=guard, max_fee_wei=1
    )

    assert len(result.images) == 1
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, GATEWAY_PATH)) == 1


def test_gateway_url_comes_from_settings_and_defaults_to_pymthouse_url(settings: Any) -> None:
    settings.LIVEPEER_GATEWAY_URL = None
    settings.PYMTHOUSE_URL = "http://127.0.0.1:9/"
    assert configured_gateway_credentials("tok").gateway_url == "http://127.0.0.1:9"

    settings.LIVEPEER_GATEWAY_URL = "https://gateway.example/"
    assert configured_gateway_credentials("tok").gateway_url == "https://gateway.example"


def test_unknown_model_503_is_retryable_and_released(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    _, error = generate_error(
        gateway_credentials, guard, LivepeerUnavailableError, model_id="acme/NoSuchModel"
    )

    assert error.status == 503
    assert error.retryable is True
    assert "Service Unavailable Error" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert stream_gets(sandbox) == []


def test_dropped_connection_is_treated_like_503(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", GATEWAY_PATH, drop=True)

    _, error = generate_error(gateway_credentials, guard, LivepeerUnavailableError)

    assert error.status is None
    assert error.retryable is True
    assert "connection dropped" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []


def test_connection_refused_is_retryable_and_released(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    dead = GatewayCredentials(
        gateway_url=f"http://127.0.0.1:{free_port()}", bearer_token=gateway_credentials.bearer_token
    )

    _, error = generate_error(dead, guard, LivepeerUnavailableError)

    assert "before the request was sent" in str(error)
    assert guard.calls == ["claim", "release"]


def test_429_is_rate_limited_with_retry_after(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST",
        GATEWAY_PATH,
        status=429,
        body={"errors": ["Too many AI requests"]},
        headers={"Retry-After": "7"},
    )

    _, error = generate_error(gateway_credentials, guard, LivepeerRateLimitedError)

    assert error.retryable is True
    assert error.retry_after == 7.0
    assert "Too many AI requests" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []


def test_400_is_terminal_and_strips_the_leading_colon(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    _, error = generate_error(gateway_credentials, guard, LivepeerBadRequestError, prompt="  ")

    assert error.status == 400
    assert error.retryable is False
    assert str(error).endswith("HTTP 400 - Prompt must be provided.")
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []


def test_500_is_retryable_and_released(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST", GATEWAY_PATH, status=500, body={"error": {"message": "Internal Server Error"}}
    )

    _, error = generate_error(gateway_credentials, guard, LivepeerUnavailableError)

    assert error.status == 500
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []


def test_a_user_token_is_sent_only_when_given_and_charges_nobody(
    sandbox: SandboxControl,
    gateway_credentials: GatewayCredentials,
    guard: RecordingGuard,
    external_user_id: str,
) -> None:
    """go-livepeer's gateway ignores Authorization and pays with its own key."""
    sandbox.set_balance(external_user_id, 0)
    token = "not-a-jwt-and-never-checked"
    with_token = GatewayCredentials(gateway_url=sandbox.url, bearer_token=token)

    _, result = generate(with_token, guard)

    assert png_size(result.images[0].content) == (640, 384)
    assert [r["auth"] for r in calls(sandbox, GATEWAY_PATH)] == ["bearer"]
    assert guard.calls == ["claim", "confirm"]
    # Nobody is charged through pymthouse on this path, even a user with no balance.
    assert sandbox.events() == []


def test_read_timeout_after_sending_is_outcome_unknown(
    sandbox: SandboxControl,
    gateway_credentials: GatewayCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_READ_TIMEOUT = 0.4
    sandbox.add_fault("POST", GATEWAY_PATH, delay=1.5, times=1)

    _, error = generate_error(gateway_credentials, guard, LivepeerOutcomeUnknownError)

    assert error.retryable is False
    assert "may have paid" in str(error)
    assert guard.calls == ["claim"]
    assert len(calls(sandbox, GATEWAY_PATH)) == 1


def test_504_from_a_proxy_is_outcome_unknown(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", GATEWAY_PATH, status=504, body="Gateway Timeout")

    _, error = generate_error(gateway_credentials, guard, LivepeerOutcomeUnknownError)

    assert error.status == 504
    assert guard.calls == ["claim"]


def test_empty_200_is_a_protocol_error_after_confirming(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", GATEWAY_PATH, status=200)

    _, error = generate_error(gateway_credentials, guard, LivepeerProtocolError)

    assert "empty body" in str(error)
    assert guard.calls == ["claim", "confirm"]


def test_evicted_stream_file_fails_the_paid_call(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("GET", "/stream/*", status=404, body="ErrNotFound")

    request, error = generate_error(gateway_credentials, guard, LivepeerPaidCallFailedError)

    assert error.status == 404
    assert error.retryable is False
    assert guard.calls == ["claim", "confirm"]
    assert request.request_id in str(error.request_id)
    assert len(stream_gets(sandbox)) == 1


def test_stream_download_503_is_retried(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("GET", "/stream/*", status=503, times=2)

    _, result = generate(gateway_credentials, guard)

    assert png_size(result.images[0].content) == (640, 384)
    assert [r["status"] for r in stream_gets(sandbox)] == [503, 503, 200]
    assert guard.calls == ["claim", "confirm"]
    assert sandbox.events() == []
