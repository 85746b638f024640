"""User JWTs (``/users/{ext}/token``) and signer sessions (``sign:mint_user_token``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from django.conf import settings as django_settings

from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseClient,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    PymthouseProtocolError,
    SecretToken,
    SignerSession,
    UserToken,
)
from tests.integrations.conftest import TOKEN_PATH, app_path, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


def _verified_claims(client: PymthouseClient, token: SecretToken) -> dict[str, Any]:
    """Verify with the sandbox's real JWKS (RS256, iss = aud = issuer), not a mock."""
    metadata = client.discovery()
    signing_key = jwt.PyJWKClient(metadata.jwks_uri).get_signing_key_from_jwt(token.reveal())
    claims: dict[str, Any] = jwt.decode(
        token.reveal(),
        signing_key.key,
        algorithms=["RS256"],
        audience=metadata.issuer,
        issuer=metadata.issuer,
    )
    return claims


# --- user tokens ------------------------------------------------------------------------


def test_mint_user_token_uses_basic_and_returns_a_typed_900s_token(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="py-user-001")

    token = client.mint_user_token(external_user_id="py-user-001")

    assert isinstance(token, UserToken)
    assert (token.token_type, token.expires_in, token.scope) == ("Bearer", 900, "sign:job")
    assert token.subject_type == "app_user"
    assert token.correlation_id
    assert token.refresh_token is not None
    assert token.refresh_token.reveal().startswith("pmth_")
    remaining = (token.expires_at - datetime.now(UTC)).total_seconds()
    assert 890 < remaining <= 900
    claims = _verified_claims(client, token.access_token)
    assert claims["external_user_id"] == "py-user-001"
    assert claims["client_id"] == django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID
    assert claims["scope"] == "sign:job"
    (record,) = calls(sandbox, "POST", app_path("/users/py-user-001/token"))
    assert (record["auth"], record["clientId"], record["status"]) == (
        "basic",
        django_settings.PYMTHOUSE_M2M_CLIENT_ID,
        200,
    )


def test_tutorial_inference_scope_is_sent_as_sign_job(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="u-1")

    token = client.mint_user_token(external_user_id="u-1", scope="inference")

    # pymthouse answers 400 invalid_scope to "inference"; a 200 proves the mapping.
    assert token.scope == "sign:job"
    assert _verified_claims(client, token.access_token)["scp"] == ["sign:job"]


@pytest.mark.parametrize("scope", ["admin", "sign:job admin", "inference admin", "", "   "])
def test_admin_or_empty_scope_is_never_requested(
    client: PymthouseClient, sandbox: SandboxControl, scope: str
) -> None:
    with pytest.raises(ValueError):
        client.mint_user_token(external_user_id="u-1", scope=scope)
    assert sandbox.requests() == []


def test_external_user_id_with_a_colon_round_trips_in_the_path(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="tenant:42.user_7")

    token = client.mint_user_token(external_user_id="tenant:42.user_7")

    assert _verified_claims(client, token.access_token)["external_user_id"] == "tenant:42.user_7"


def test_user_token_for_unknown_user_is_not_found(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    with pytest.raises(PymthouseNotFoundError) as excinfo:
        client.mint_user_token(external_user_id="nobody-xyz")

    error = excinfo.value
    assert (error.status, error.code) == (404, "not_found")
    assert error.description == "the provisioned user could not be resolved"
    assert error.correlation_id
    assert error.correlation_id in str(error)


def test_user_token_with_wrong_secret_is_invalid_client(
    sandbox: SandboxControl, settings: Any
) -> None:
    PymthouseClient.from_settings().upsert_user(external_user_id="u-1")
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "f" * 64
    client = PymthouseClient.from_settings()

    with pytest.raises(PymthouseAuthError) as excinfo:
        client.mint_user_token(external_user_id="u-1")

    error = excinfo.value
    assert (error.status, error.code) == (401, "invalid_client")
    assert error.description == "failed confidential-client authentication"
    assert len(calls(sandbox, "POST", app_path("/users/u-1/token"))) == 1  # POST: no retry


def test_user_token_response_without_access_token_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "POST",
        app_path("/users/u-1/token"),
        status=200,
        body={"token_type": "Bearer", "expires_in": 900, "scope": "sign:job"},
    )
    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.mint_user_token(external_user_id="u-1")
    assert "access_token" in str(excinfo.value)


# --- signer sessions --------------------------------------------------------------------


def test_signer_session_is_typed_with_integer_balances(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.set_balance("py-user-001", 4_780_000)

    session = client.mint_signer_session(external_user_id="py-user-001")

    assert isinstance(session, SignerSession)
    assert (session.token_type, session.expires_in, session.scope) == ("Bearer", 300, "sign:job")
    assert session.signer_url == f"{sandbox.url}/signer"
    assert session.discovery_url == f"{sandbox.url}/signer/discover-orchestrators"
    assert session.balance_usd_micros == 4_780_000
    assert type(session.balance_usd_micros) is int
    assert session.lifetime_granted_usd_micros == 4_780_000
    assert session.issued_token_type == "urn:ietf:params:oauth:token-type:access_token"
    assert 290 < (session.expires_at - datetime.now(UTC)).total_seconds() <= 300
    claims = _verified_claims(client, session.access_token)
    assert (claims["sub"], claims["external_user_id"]) == ("py-user-001", "py-user-001")
    assert claims["client_id"] == django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID
    (record,) = calls(sandbox, "POST", TOKEN_PATH)
    assert (record["auth"], record["clientId"], record["status"]) == (
        "basic",
        django_settings.PYMTHOUSE_M2M_CLIENT_ID,
        200,
    )


def test_signer_session_auto_provisions_the_user(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    session = client.mint_signer_session(external_user_id="brand-new")

    assert session.balance_usd_micros == 5_000_000  # the sandbox's Starter grant
    assert [u["externalUserId"] for u in sandbox.users()] == ["brand-new"]


@pytest.mark.parametrize("balance", [0, -1])
def test_signer_session_without_funds_is_402_with_reason(
    client: PymthouseClient, sandbox: SandboxControl, balance: int
) -> None:
    sandbox.set_balance("broke-user", balance)

    with pytest.raises(PymthouseInsufficientFundsError) as excinfo:
        client.mint_signer_session(external_user_id="broke-user")

    error = excinfo.value
    assert (error.status, error.code, error.reason) == (
        402,
        "trial_credits_exhausted",
        "overage_not_available",
    )
    assert error.description == "Add funds to continue"
    assert error.retryable is False
    assert "reason=overage_not_available" in str(error)
    assert [r["status"] for r in calls(sandbox, "POST", TOKEN_PATH)] == [402]


def test_signer_session_reports_zero_when_hosted_billing_is_off(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.set_config(openMeterEnabled=False)
    sandbox.set_balance("u-1", 0)

    session = client.mint_signer_session(external_user_id="u-1")

    assert (session.balance_usd_micros, session.lifetime_granted_usd_micros) == (0, 0)


def test_signer_session_with_wrong_secret_is_invalid_client(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "e" * 64
    client = PymthouseClient.from_settings()

    with pytest.raises(PymthouseAuthError) as excinfo:
        client.mint_signer_session(external_user_id="u-1")

    assert (excinfo.value.status, excinfo.value.code) == (401, "invalid_client")
    assert sandbox.users() == []


@pytest.mark.parametrize("balance", ["1.5", "1e6", " 5", "５", 1.5, 10**20, None, True], ids=repr)
def test_signer_session_with_a_non_integer_balance_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl, balance: object
) -> None:
    body = {
        "access_token": "eyJ" + "a" * 60,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "sign:job",
        "balanceUsdMicros": balance,
        "signer_url": "http://127.0.0.1:1/signer",
        "discovery_url": "http://127.0.0.1:1/signer/discover-orchestrators",
    }
    sandbox.add_fault("POST", TOKEN_PATH, status=200, body=body)

    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.mint_signer_session(external_user_id="u-1")

    assert "balanceUsdMicros" in str(excinfo.value)
    assert "eyJ" + "a" * 60 not in str(excinfo.value)
    assert "eyJ" + "a" * 60 not in repr(excinfo.value.__cause__)
