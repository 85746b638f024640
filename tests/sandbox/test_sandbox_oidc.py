"""Discovery, JWKS, the issuer token endpoint and the app-scoped exchange."""

from __future__ import annotations

import base64
import re
import time
import uuid

import jwt
import pytest
import requests

from tests.sandbox.helpers import (
    ACCESS_TOKEN_TYPE,
    APP_ID,
    BASIC,
    M2M_ID,
    M2M_SECRET,
    TOKEN_EXCHANGE,
    claims,
    jose_header,
    provision,
    signer_address,
    signer_session,
    user_token,
)
from tests.sandbox_server import SandboxControl

ADMIN_SCOPE = "users:read users:write users:token"


def token_request(
    http: requests.Session, base: str, data: dict[str, str], **kwargs: object
) -> requests.Response:
    return http.post(f"{base}/api/v1/oidc/token", data=data, **kwargs)  # type: ignore[arg-type]


def test_health(http: requests.Session, base: str) -> None:
    response = http.get(f"{base}/api/v1/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["status", "timestamp", "version", "database", "signer"]
    assert body["status"] == "ok"
    assert body["database"] == "connected"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])
    assert body["signer"]["status"] == "running"
    assert body["signer"]["reachable"] is True
    assert re.fullmatch(r"0x[0-9a-f]{40}", body["signer"]["ethAddress"])


def test_root_discovery(http: requests.Session, base: str) -> None:
    response = http.get(f"{base}/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["content-type"] == "application/json"
    issuer = f"{base}/api/v1/oidc"
    body = response.json()
    assert body["issuer"] == issuer
    assert body["token_endpoint"] == f"{issuer}/token"
    assert body["jwks_uri"] == f"{issuer}/jwks"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in body["grant_types_supported"]
    assert body["response_modes_supported"] == ["query"]
    assert "offline_access" in body["scopes_supported"]
    assert "device:approve" not in body["scopes_supported"]
    assert "registration_endpoint" not in body
    assert body["service_documentation"] == "https://docs.pymthouse.com/api-reference/introduction"


def test_issuer_discovery(http: requests.Session, base: str) -> None:
    response = http.get(f"{base}/api/v1/oidc/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    issuer = f"{base}/api/v1/oidc"
    body = response.json()
    assert body["issuer"] == issuer
    assert body["token_endpoint"] == f"{issuer}/token"
    assert body["jwks_uri"] == f"{issuer}/jwks"
    assert body["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    assert body["response_modes_supported"] == ["form_post", "fragment", "query"]
    assert "device:approve" in body["scopes_supported"]
    assert "sign:mint_user_token" not in body["scopes_supported"]


def test_jwks_verifies_minted_tokens(http: requests.Session, base: str) -> None:
    response = http.get(f"{base}/api/v1/oidc/jwks")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json; charset=utf-8"
    keys = response.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert list(key) == ["kty", "use", "kid", "alg", "e", "n"]
    assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert uuid.UUID(key["kid"]).version == 4
    public_key = jwt.PyJWK(key).key
    assert public_key.key_size == 2048

    issuer = f"{base}/api/v1/oidc"
    token = token_request(
        http, base, {"grant_type": "client_credentials", "scope": ADMIN_SCOPE}, auth=BASIC
    ).json()["access_token"]
    verified = jwt.decode(token, public_key, algorithms=["RS256"], audience=issuer, issuer=issuer)
    assert verified["client_id"] == M2M_ID
    assert jose_header(token)["kid"] == key["kid"]

    signer = signer_session(http, base, "jwks-user")["access_token"]
    verified = jwt.decode(signer, public_key, algorithms=["RS256"], audience=issuer, issuer=issuer)
    assert verified["external_user_id"] == "jwks-user"


@pytest.mark.parametrize("style", ["basic", "post"])
def test_client_credentials_admin_token(http: requests.Session, base: str, style: str) -> None:
    data = {"grant_type": "client_credentials", "scope": ADMIN_SCOPE}
    if style == "basic":
        response = token_request(http, base, data, auth=BASIC)
    else:
        response = token_request(
            http, base, {**data, "client_id": M2M_ID, "client_secret": M2M_SECRET}
        )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert list(body) == ["access_token", "expires_in", "token_type", "scope"]
    assert (body["expires_in"], body["token_type"], body["scope"]) == (3600, "Bearer", ADMIN_SCOPE)
    assert jose_header(body["access_token"]) == {
        "alg": "RS256",
        "typ": "at+jwt",
        "kid": jose_header(body["access_token"])["kid"],
    }
    token_claims = claims(body["access_token"])
    issuer = f"{base}/api/v1/oidc"
    assert list(token_claims) == ["jti", "sub", "iat", "exp", "scope", "client_id", "iss", "aud"]
    assert token_claims["sub"] == token_claims["client_id"] == M2M_ID
    assert token_claims["iss"] == token_claims["aud"] == issuer
    assert token_claims["scope"] == ADMIN_SCOPE
    assert token_claims["exp"] - token_claims["iat"] == 3600


def test_basic_credentials_are_form_decoded(http: requests.Session, base: str) -> None:
    encoded_id = M2M_ID.replace("_", "%5F")
    header = base64.b64encode(f"{encoded_id}:{M2M_SECRET}".encode()).decode()
    response = token_request(
        http,
        base,
        {"grant_type": "client_credentials", "scope": "users:read"},
        headers={"Authorization": f"Basic {header}"},
    )
    assert response.status_code == 200
    assert claims(response.json()["access_token"])["client_id"] == M2M_ID


def test_client_credentials_without_scope_is_a_signer_mint(
    http: requests.Session, base: str
) -> None:
    response = token_request(http, base, {"grant_type": "client_credentials"}, auth=BASIC)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "external_user_id is required",
    }


def test_sign_job_mixed_with_admin_scopes(http: requests.Session, base: str) -> None:
    response = token_request(
        http, base, {"grant_type": "client_credentials", "scope": "users:read sign:job"}, auth=BASIC
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": (
            "sign:job cannot be combined with administrative scopes in the same token"
        ),
    }


@pytest.mark.parametrize(
    "auth", [(M2M_ID, "wrong"), (APP_ID, M2M_SECRET)], ids=["wrong-secret", "public-app-id"]
)
def test_client_credentials_bad_client(
    http: requests.Session, base: str, auth: tuple[str, str]
) -> None:
    response = token_request(
        http, base, {"grant_type": "client_credentials", "scope": "users:read"}, auth=auth
    )
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["www-authenticate"] == (
        f'Basic realm="{base}/api/v1/oidc", error="invalid_client", '
        'error_description="client authentication failed"'
    )
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "client authentication failed",
    }


def test_client_credentials_scope_not_allowed(http: requests.Session, base: str) -> None:
    response = token_request(
        http, base, {"grant_type": "client_credentials", "scope": "admin"}, auth=BASIC
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_scope",
        "error_description": "requested scope is not allowed",
        "scope": "admin",
    }


def test_token_endpoint_needs_a_form_body(http: requests.Session, base: str) -> None:
    response = http.post(
        f"{base}/api/v1/oidc/token", json={"grant_type": "client_credentials"}, auth=BASIC
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unsupported_and_disallowed_grants(http: requests.Session, base: str) -> None:
    response = token_request(http, base, {"grant_type": "password"}, auth=BASIC)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"

    refresh = {"grant_type": "refresh_token", "refresh_token": "pmth_" + "0" * 64}
    response = token_request(http, base, refresh, auth=BASIC)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "requested grant type is not allowed for this client",
    }
    assert token_request(http, base, refresh, auth=(APP_ID, M2M_SECRET)).status_code == 401

    exchange = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": "x",
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    response = token_request(http, base, exchange)
    assert response.status_code == 400
    assert response.json() == {
        "error": "unsupported_token_type",
        "error_description": "Unsupported subject token type",
    }


def test_signer_mint_auto_provisions(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    response = token_request(
        http,
        base,
        {
            "grant_type": "client_credentials",
            "scope": "sign:mint_user_token",
            "external_user_id": "mint-user",
            "audience": f"{base}/api/v1/oidc",
        },
        auth=BASIC,
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "balanceUsdMicros",
        "lifetimeGrantedUsdMicros",
        "signer_url",
        "discovery_url",
        "issued_token_type",
    ]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "sign:job"
    assert body["balanceUsdMicros"] == "5000000"
    assert body["lifetimeGrantedUsdMicros"] == "5000000"
    assert body["signer_url"] == f"{base}/signer"
    assert body["discovery_url"] == f"{base}/signer/discover-orchestrators"
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert jose_header(body["access_token"])["typ"] == "at+jwt"
    token_claims = claims(body["access_token"])
    assert list(token_claims) == [
        "scope", "scp", "client_id", "external_user_id", "user_type", "billing_subject_key",
        "cost_owner_user_id", "iss", "aud", "sub", "jti", "iat", "nbf", "exp",
    ]  # fmt: skip
    assert token_claims["scope"] == "sign:job"
    assert token_claims["scp"] == ["sign:job"]
    assert token_claims["client_id"] == APP_ID
    assert token_claims["external_user_id"] == token_claims["sub"] == "mint-user"
    assert token_claims["user_type"] == "external_user"
    assert token_claims["iss"] == token_claims["aud"] == f"{base}/api/v1/oidc"
    assert token_claims["exp"] - token_claims["iat"] == 300
    assert token_claims["nbf"] == token_claims["iat"]
    assert token_claims["iat"] <= time.time() + 1
    assert [(u["externalUserId"], u["balanceUsdMicros"]) for u in control.users()] == [
        ("mint-user", "5000000")
    ]


def test_signer_mint_reports_current_balance(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.set_balance("rich", 4_780_000)
    body = signer_session(http, base, "rich")
    assert body["balanceUsdMicros"] == "4780000"
    assert body["lifetimeGrantedUsdMicros"] == "4780000"


@pytest.mark.parametrize("balance", [0, -5])
def test_signer_mint_402_when_out_of_credit(
    http: requests.Session, base: str, control: SandboxControl, balance: int
) -> None:
    control.set_balance("broke", balance)
    response = token_request(
        http,
        base,
        {
            "grant_type": "client_credentials",
            "scope": "sign:mint_user_token",
            "external_user_id": "broke",
        },
        auth=BASIC,
    )
    assert response.status_code == 402
    assert response.json() == {
        "error": "trial_credits_exhausted",
        "error_description": "Add funds to continue",
        "reason": "overage_not_available",
    }


def test_signer_mint_is_permissive_without_openmeter(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    control.set_balance("broke", 0)
    control.set_config(openMeterEnabled=False)
    body = signer_session(http, base, "broke")
    assert (body["balanceUsdMicros"], body["lifetimeGrantedUsdMicros"]) == ("0", "0")


def test_signer_mint_errors(http: requests.Session, base: str) -> None:
    data = {"grant_type": "client_credentials", "scope": "sign:mint_user_token"}
    response = token_request(http, base, data, auth=BASIC)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "external_user_id is required",
    }
    response = token_request(http, base, {**data, "external_user_id": "x"}, auth=(M2M_ID, "wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def exchange(
    http: requests.Session, base: str, subject_token: str, app: str = APP_ID, **extra: str
) -> requests.Response:
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }
    return http.post(f"{base}/api/v1/apps/{app}/oidc/token", data=data)


def test_app_scoped_exchange_with_user_token(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    from tests.sandbox.helpers import provision

    provision(http, base, "ex-user")
    response = exchange(http, base, user_token(http, base, "ex-user"), caps="text-to-image/x")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert list(body)[-3:] == ["issued_token_type", "caps", "correlation_id"]
    assert uuid.UUID(body["correlation_id"])
    assert body["caps"] == ["text-to-image/x"]
    assert body["expires_in"] == 300
    assert body["balanceUsdMicros"] == "5000000"
    token_claims = claims(body["access_token"])
    assert token_claims["sub"] == token_claims["external_user_id"] == "ex-user"
    assert token_claims["user_type"] == "external_user"

    control.set_balance("ex-user", 0)
    response = exchange(http, base, user_token(http, base, "ex-user"))
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "trial_credits_exhausted"
    assert body["reason"] == "overage_not_available"
    assert uuid.UUID(body["correlation_id"])


def test_app_scoped_exchange_errors(http: requests.Session, base: str) -> None:
    from tests.sandbox.helpers import provision

    provision(http, base, "ex-user")
    token = user_token(http, base, "ex-user")

    response = http.post(
        f"{base}/api/v1/apps/{APP_ID}/oidc/token",
        json={"grant_type": TOKEN_EXCHANGE, "subject_token": token},
    )
    assert response.status_code == 400
    assert response.json()["error_description"] == (
        "content-type must be application/x-www-form-urlencoded"
    )

    response = exchange(http, base, token, app="app_000000000000000000000000")
    assert response.status_code == 404
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"] == "app not found"

    response = exchange(http, base, token, subject_token_type="urn:x:unknown")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_token_type"

    response = exchange(http, base, "pmth_" + "a" * 64)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"

    response = exchange(http, base, token[:-4] + "AAAA")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")

    m2m_token = token_request(
        http, base, {"grant_type": "client_credentials", "scope": "users:read"}, auth=BASIC
    ).json()["access_token"]
    response = exchange(http, base, m2m_token)
    assert response.status_code == 400
    assert response.json()["error_description"] == "subject_token client does not match this app"

    openid_token = http.post(
        f"{base}/api/v1/apps/{APP_ID}/users/ex-user/token", auth=BASIC, json={"scope": "openid"}
    ).json()["access_token"]
    response = exchange(http, base, openid_token)
    assert response.status_code == 400
    assert response.json()["error_description"] == "subject_token must include sign:job scope"

    response = http.post(
        f"{base}/api/v1/apps/{APP_ID}/oidc/token",
        data={"grant_type": TOKEN_EXCHANGE, "subject_token": token,
              "subject_token_type": ACCESS_TOKEN_TYPE},
        auth=(M2M_ID, "wrong"),
    )  # fmt: skip
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="token"'
    assert response.json()["error"] == "invalid_client"

    response = exchange(http, base, token, resource="https://elsewhere.example")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_target")


def _sdk_exchange(http: requests.Session, base: str, subject: str) -> requests.Response:
    """What ``@pymthouse/builder-sdk`` ``exchangeForSignerSession`` sends: a user JWT,
    access-token types, ``resource`` = the issuer, the M2M client's Basic."""
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "resource": f"{base}/api/v1/oidc",
    }
    return token_request(http, base, data, auth=BASIC)


def test_global_signer_jwt_exchange_returns_a_signer_session(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    """pymthouse/pymthouse@5ee7cfc7 src/lib/oidc/signer-jwt-token-exchange.ts, dispatched
    before the gateway and Pattern-B branches in src/app/api/v1/oidc/[...oidc]/route.ts."""
    provision(http, base, "sdk-user")
    subject = user_token(http, base, "sdk-user")
    response = _sdk_exchange(http, base, subject)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["deprecation"] == "true"
    assert response.headers["sunset"] == "2026-10-01"
    assert response.headers["link"] == (
        '</api/v1/apps/{clientId}/oidc/token>; rel="successor-version"'
    )
    body = response.json()
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "issued_token_type",
        "balanceUsdMicros",
        "lifetimeGrantedUsdMicros",
    ]
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 300, "sign:job")
    assert (body["balanceUsdMicros"], body["lifetimeGrantedUsdMicros"]) == ("5000000", "5000000")
    signer = claims(body["access_token"])
    assert (signer["external_user_id"], signer["client_id"]) == ("sdk-user", APP_ID)
    # The session is a real signer JWT: the signer accepts it.
    assert signer_address(http, base, body["access_token"]).startswith("0x")
    # ``audience`` instead of ``resource`` (trailing slash ignored) takes the same branch.
    audience = token_request(
        http, base,
        {"grant_type": TOKEN_EXCHANGE, "subject_token": subject,
         "subject_token_type": ACCESS_TOKEN_TYPE, "audience": f"{base}/api/v1/oidc/"},
        auth=BASIC,
    )  # fmt: skip
    assert audience.status_code == 200


def test_global_signer_jwt_exchange_refusals(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    provision(http, base, "sdk-user")
    subject = user_token(http, base, "sdk-user")
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": f"{base}/api/v1/oidc",
    }
    no_auth = token_request(http, base, data)
    assert (no_auth.status_code, no_auth.json()) == (
        400, {"error": "invalid_client", "error_description": "Invalid client credentials"},
    )  # fmt: skip
    wrong = token_request(http, base, data, auth=(M2M_ID, "pmth_cs_wrong"))
    assert wrong.json()["error"] == "invalid_client"
    forged = token_request(http, base, {**data, "subject_token": subject[:-4] + "AAAA"}, auth=BASIC)
    assert forged.json()["error"] == "invalid_grant"
    m2m_token = token_request(
        http, base, {"grant_type": "client_credentials", "scope": "users:read"}, auth=BASIC
    ).json()["access_token"]
    foreign = token_request(http, base, {**data, "subject_token": m2m_token}, auth=BASIC)
    assert foreign.json() == {
        "error": "invalid_grant",
        "error_description": "subject_token does not belong to this developer app",
    }
    control.set_balance("sdk-user", 0)  # the mint's balance gate applies
    broke = token_request(http, base, data, auth=BASIC)
    assert (broke.status_code, broke.json()["error"]) == (402, "trial_credits_exhausted")
    # Without the signer audience it is still the (unemulated) Pattern-B answer (10b).
    other = token_request(http, base, {**data, "resource": "https://elsewhere.example"})
    assert other.json()["error"] == "unsupported_token_type"
