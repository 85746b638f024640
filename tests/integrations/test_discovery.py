"""OIDC discovery (``integrations.oidc.discovery``, as the pymthouse client uses it): issuer
document first, root fallback, exact issuer check, shared cache."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache

from integrations import oidc
from integrations.oidc import discovery
from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseClient,
    PymthouseConfigurationError,
    PymthouseUnavailableError,
)
from tests.integrations.conftest import ISSUER_DOC, ROOT_DOC, TOKEN_PATH, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

NEXT_404_HTML = (
    "<!DOCTYPE html><html><head><title>404: This page could not be found.</title></head>"
    "<body><h1>404</h1></body></html>"
)


def _document(**overrides: Any) -> dict[str, Any]:
    issuer = django_settings.PYMTHOUSE_ISSUER
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "grant_types_supported": ["client_credentials"],
        **overrides,
    }


def test_issuer_document_is_used_and_cached_across_clients(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    issuer = django_settings.PYMTHOUSE_ISSUER
    metadata = client.discovery()

    assert metadata.issuer == issuer
    assert metadata.token_endpoint == f"{issuer}/token"
    assert metadata.jwks_uri == f"{issuer}/jwks"
    # The issuer document (node-oidc-provider's) has no token-exchange grant; the root has.
    assert "urn:ietf:params:oauth:grant-type:token-exchange" not in metadata.grant_types_supported

    second_client = PymthouseClient.from_settings()
    assert client.discovery() == metadata
    assert second_client.discovery() == metadata
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1
    assert calls(sandbox, "GET", ROOT_DOC) == []


def test_token_endpoint_comes_from_discovery(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    # The issuer document points the token endpoint somewhere else on the same origin;
    # the client must follow the document, not a hard-coded path.
    issuer = django_settings.PYMTHOUSE_ISSUER
    sandbox.add_fault(
        "GET", ISSUER_DOC, status=200, body=_document(token_endpoint=f"{issuer}/token-moved")
    )
    sandbox.add_fault("POST", "/api/v1/oidc/token-moved", status=503, times=1)

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.mint_signer_session(external_user_id="user-1")

    assert excinfo.value.path == "/api/v1/oidc/token-moved"
    assert len(calls(sandbox, "POST", "/api/v1/oidc/token-moved")) == 1
    assert calls(sandbox, "POST", TOKEN_PATH) == []


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (404, NEXT_404_HTML, {"Content-Type": "text/html; charset=utf-8"}),
        (404, {"error": "Not found"}, None),
        (200, "this is not json", None),
        (200, {"issuer": "missing everything else"}, None),
    ],
)
def test_unusable_issuer_document_falls_back_to_root_document(
    client: PymthouseClient,
    sandbox: SandboxControl,
    status: int,
    body: Any,
    headers: dict[str, str] | None,
) -> None:
    sandbox.add_fault("GET", ISSUER_DOC, status=status, body=body, headers=headers)

    metadata = client.discovery()

    assert metadata.issuer == django_settings.PYMTHOUSE_ISSUER
    # Only the root (hand-written) document advertises token exchange.
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in metadata.grant_types_supported
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1
    assert len(calls(sandbox, "GET", ROOT_DOC)) == 1
    # The fallback result is cached like any other.
    client.mint_signer_session(external_user_id="user-1")
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1
    assert len(calls(sandbox, "GET", ROOT_DOC)) == 1


def test_issuer_mismatch_is_a_configuration_error_and_never_falls_back(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "GET", ISSUER_DOC, status=200, body=_document(issuer="https://evil.example/api/v1/oidc")
    )

    with pytest.raises(PymthouseConfigurationError) as excinfo:
        client.mint_signer_session(external_user_id="user-1")

    error = excinfo.value
    assert isinstance(error, PymthouseAuthError)
    assert error.code == "issuer_mismatch"
    assert error.retryable is False
    assert "https://evil.example/api/v1/oidc" in str(error)
    assert calls(sandbox, "GET", ROOT_DOC) == []
    assert calls(sandbox, "POST", TOKEN_PATH) == []  # the secret never left
    # Nothing was cached: the next call asks again.
    with pytest.raises(PymthouseConfigurationError):
        client.discovery()
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 2


def test_configured_issuer_that_the_server_does_not_claim_is_rejected(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.PYMTHOUSE_ISSUER = f"{settings.PYMTHOUSE_URL}/api/v1/other-issuer"
    client = PymthouseClient.from_settings()

    with pytest.raises(PymthouseConfigurationError) as excinfo:
        client.discovery()

    assert excinfo.value.code == "issuer_mismatch"
    # Issuer-relative document 404s (no such route), the root one names another issuer.
    assert [r["status"] for r in calls(sandbox, "GET", "/api/v1/other-issuer" + ROOT_DOC)] == [404]
    assert [r["status"] for r in calls(sandbox, "GET", ROOT_DOC)] == [200]


def test_token_endpoint_on_a_foreign_origin_is_rejected(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "GET", ISSUER_DOC, status=200, body=_document(token_endpoint="https://evil.example/token")
    )

    with pytest.raises(PymthouseConfigurationError) as excinfo:
        client.mint_signer_session(external_user_id="user-1")

    assert excinfo.value.code == "endpoint_origin_mismatch"
    assert calls(sandbox, "POST", TOKEN_PATH) == []


def test_unavailable_issuer_document_propagates_without_fallback(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", ISSUER_DOC, status=503, body={"error": "down"})

    with pytest.raises(PymthouseUnavailableError) as excinfo:
        client.discovery()

    assert excinfo.value.status == 503
    # 1 try + PYMTHOUSE_MAX_RETRIES (2) urllib3 retries of the GET, then no fallback.
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1 + django_settings.PYMTHOUSE_MAX_RETRIES
    assert calls(sandbox, "GET", ROOT_DOC) == []


def test_discovery_cache_lifetime_comes_from_settings(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.OIDC_DISCOVERY_CACHE_SECONDS = 0  # 0 = do not cache
    client = PymthouseClient.from_settings()

    client.discovery()
    client.discovery()

    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 2


def test_sso_and_the_pymthouse_client_share_one_discovery_client_and_cache(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    issuer = django_settings.PYMTHOUSE_ISSUER
    metadata = client.discovery()

    document = oidc.discover(issuer)  # what SSO reads

    assert document["token_endpoint"] == metadata.token_endpoint
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1
    # A shared-cache miss (as while Redis is down) is answered by this process's copy.
    cache.delete(discovery.cache_key("discovery", issuer))
    assert client.discovery() == metadata
    assert len(calls(sandbox, "GET", ISSUER_DOC)) == 1
