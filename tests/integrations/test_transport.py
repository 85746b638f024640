"""Timeouts, retries, dropped connections, rate limits and redirects over real loopback HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from django.conf import settings as django_settings
from urllib3.exceptions import MaxRetryError, NewConnectionError

from integrations.pymthouse import (
    PymthouseClient,
    PymthouseConfigurationError,
    PymthouseRateLimitedError,
    PymthouseTimeoutError,
    PymthouseUnavailableError,
)
from integrations.pymthouse.session import (
    IDEMPOTENT_METHODS,
    USER_AGENT,
    PymthouseSession,
    build_retry,
)
from tests.integrations.conftest import TOKEN_PATH, app_path, builder_path, calls
from tests.sandbox_server import SandboxControl, free_port

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
USERS = app_path("/users")


# --- urllib3 retries: idempotent methods only -------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_is_retried_once_after_a_gateway_error(
    client: PymthouseClient, sandbox: SandboxControl, status: int
) -> None:
    sandbox.add_fault("GET", USAGE, status=status, body={"error": "blip"}, times=1)

    report = client.usage()

    assert report.totals.request_count == 0
    assert [r["status"] for r in calls(sandbox, "GET", USAGE)] == [status, 200]


def test_500_is_not_retried(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", USAGE, status=500, body={"error": "boom"}, times=1)

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.usage()

    assert (excinfo.value.status, excinfo.value.description) == (500, "boom")
    assert len(calls(sandbox, "GET", USAGE)) == 1


def test_put_and_delete_are_retried(sandbox: SandboxControl) -> None:
    # No client call sends them today; the session's retry policy still covers them.
    sandbox.add_fault("PUT", "/idempotent", status=503, times=1)
    sandbox.add_fault("DELETE", "/idempotent", status=502, times=1)
    session = PymthouseSession(connect_timeout=1, read_timeout=2, max_retries=2)

    session.put(f"{sandbox.url}/idempotent", json={})
    session.delete(f"{sandbox.url}/idempotent")

    assert [r["status"] for r in calls(sandbox, "PUT", "/idempotent")][:1] == [503]
    assert len(calls(sandbox, "PUT", "/idempotent")) == 2
    assert [r["status"] for r in calls(sandbox, "DELETE", "/idempotent")][:1] == [502]
    assert len(calls(sandbox, "DELETE", "/idempotent")) == 2


def test_post_is_never_retried(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault("POST", USERS, status=503, body={"error": "blip"}, times=1)
    sandbox.add_fault("POST", TOKEN_PATH, status=502, times=1)

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.upsert_user(external_user_id="u-1")
    assert excinfo.value.status == 503
    assert excinfo.value.retryable is True
    with pytest.raises(PymthouseUnavailableError):
        client.mint_signer_session(external_user_id="u-1")

    assert len(calls(sandbox, "POST", USERS)) == 1
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1
    assert sandbox.users() == []


def test_short_retry_after_is_honoured(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", USAGE, status=503, headers={"Retry-After": "1"}, times=1)

    started = time.monotonic()
    client.usage()

    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in calls(sandbox, "GET", USAGE)] == [503, 200]


def test_long_retry_after_is_handed_to_the_caller_instead_of_sleeping(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", USAGE, status=503, body={"error": "x"}, headers={"Retry-After": "120"})

    started = time.monotonic()
    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.usage()

    assert time.monotonic() - started < 1.0
    assert excinfo.value.retry_after == 120.0
    assert len(calls(sandbox, "GET", USAGE)) == 1


# --- rate limiting --------------------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after_seconds(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "GET", USAGE, status=429, body={"error": "rate_limited"}, headers={"Retry-After": "7"}
    )

    started = time.monotonic()
    with pytest.raises(PymthouseRateLimitedError) as excinfo:
        client.usage()

    error = excinfo.value
    assert (error.status, error.code, error.retry_after) == (429, "rate_limited", 7.0)
    assert error.retryable is True
    # Not retried (and not slept on) inside the request: the Celery task owns the wait.
    assert time.monotonic() - started < 1.0
    assert len(calls(sandbox, "GET", USAGE)) == 1


def test_429_retry_after_http_date(client: PymthouseClient, sandbox: SandboxControl) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    sandbox.add_fault("POST", USERS, status=429, headers={"Retry-After": when})

    with pytest.raises(PymthouseRateLimitedError) as excinfo:
        client.upsert_user(external_user_id="u-1")

    assert excinfo.value.retry_after is not None
    assert 27 <= excinfo.value.retry_after <= 30


def test_429_without_or_with_garbage_retry_after(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", USAGE, status=429, times=1)
    sandbox.add_fault("GET", USAGE, status=429, headers={"Retry-After": "soon"}, times=1)

    for _ in range(2):
        with pytest.raises(PymthouseRateLimitedError) as excinfo:
            client.usage()
        assert excinfo.value.retry_after is None


# --- timeouts and broken connections ----------------------------------------------------------


@pytest.fixture
def impatient_client(sandbox: SandboxControl, settings: Any) -> PymthouseClient:
    settings.PYMTHOUSE_READ_TIMEOUT = 0.5
    return PymthouseClient.from_settings()


def test_read_timeout_on_get(impatient_client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", USAGE, delay=1.5)

    started = time.monotonic()
    with pytest.raises(PymthouseTimeoutError) as excinfo:
        impatient_client.usage()

    assert 0.5 <= time.monotonic() - started < 1.4
    assert excinfo.value.retryable is True
    assert excinfo.value.status is None
    assert isinstance(excinfo.value.__cause__, Exception)  # raised from the requests error
    assert len(calls(sandbox, "GET", USAGE)) == 1  # a read timeout is never retried


def test_read_timeout_on_post(impatient_client: PymthouseClient, sandbox: SandboxControl) -> None:
    impatient_client.discovery()
    sandbox.add_fault("POST", TOKEN_PATH, delay=1.5)

    with pytest.raises(PymthouseTimeoutError):
        impatient_client.mint_signer_session(external_user_id="u-1")

    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", USAGE, lambda client: client.usage()),
        ("POST", USERS, lambda client: client.upsert_user(external_user_id="u-1")),
    ],
)
def test_dropped_connection_is_unavailable(
    client: PymthouseClient, sandbox: SandboxControl, method: str, path: str, call: Any
) -> None:
    sandbox.add_fault(method, path, drop=True, times=1)

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        call(client)

    assert excinfo.value.status is None
    assert "connection failed" in str(excinfo.value)
    (record,) = calls(sandbox, method, path)
    assert record["dropped"] is True


def test_connection_refused_is_unavailable(sandbox: SandboxControl, settings: Any) -> None:
    settings.PYMTHOUSE_URL = f"http://127.0.0.1:{free_port()}"
    settings.PYMTHOUSE_ISSUER = f"{settings.PYMTHOUSE_URL}/api/v1/oidc"

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        PymthouseClient.from_settings().usage()

    assert excinfo.value.retryable is True
    assert excinfo.value.path == USAGE


# --- redirects --------------------------------------------------------------------------------


def test_redirects_are_never_followed(client: PymthouseClient, sandbox: SandboxControl) -> None:
    sandbox.add_fault(
        "GET", USAGE, status=302, headers={"Location": f"{sandbox.url}/api/v1/health"}
    )

    with pytest.raises(PymthouseConfigurationError) as excinfo:
        client.usage()

    assert excinfo.value.status == 302
    assert calls(sandbox, "GET", "/api/v1/health") == []  # Basic credentials stayed home


def test_session_forces_no_redirects_even_if_asked(sandbox: SandboxControl) -> None:
    sandbox.add_fault("GET", "/moved", status=301, headers={"Location": "/api/v1/health"})
    session = PymthouseSession(connect_timeout=1, read_timeout=1, max_retries=0)

    response = session.get(f"{sandbox.url}/moved", allow_redirects=True)

    assert response.status_code == 301
    assert calls(sandbox, "GET", "/api/v1/health") == []


# --- session defaults and the Retry object -------------------------------------------------


def test_session_defaults_come_from_settings(client: PymthouseClient) -> None:
    session = client._session
    assert session.default_timeout == (
        django_settings.PYMTHOUSE_CONNECT_TIMEOUT,
        django_settings.PYMTHOUSE_READ_TIMEOUT,
    )
    assert session.headers["User-Agent"] == USER_AGENT == "pixelhouse/0.1 (+pymthouse client)"
    for scheme in ("http://", "https://"):
        retry = session.get_adapter(scheme).max_retries  # type: ignore[attr-defined]
        assert retry.allowed_methods == IDEMPOTENT_METHODS == {"GET", "HEAD", "PUT", "DELETE"}
        assert set(retry.status_forcelist) == {502, 503, 504}
        assert retry.total == retry.connect == retry.status == django_settings.PYMTHOUSE_MAX_RETRIES
        assert retry.read is False
        assert retry.raise_on_status is False
        assert retry.respect_retry_after_header is True


def test_retry_object_refuses_every_post_retry_but_retries_get_connect_errors() -> None:
    retry = build_retry(2)
    refused = NewConnectionError(None, "refused")  # type: ignore[arg-type]

    with pytest.raises(MaxRetryError):
        retry.increment("POST", "/x", error=refused)
    assert retry.is_retry("POST", 503) is False
    assert retry.is_retry("GET", 429, has_retry_after=True) is False
    assert retry.is_retry("GET", 500) is False
    assert retry.is_retry("GET", 503) is True

    after_one = retry.increment("GET", "/x", error=refused)
    assert (after_one.total, after_one.connect) == (1, 1)
