"""OIDC surface: both discovery documents, JWKS, the issuer token endpoint, health.

Shapes, status codes and headers follow responses observed from pymthouse@5ee7cfc
(docs/upstream.md §P2, §P3). Responses node-oidc-provider would produce use ``application/json;
charset=utf-8``; pymthouse-authored branches use plain ``application/json``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import __version__
from sandbox.pymthouse.browser import code_grant, web_client_authenticated
from sandbox.pymthouse.exchange import signer_jwt_exchange, targets_signer_audience
from sandbox.pymthouse.sessions import (
    MIXED_SCOPE_DESCRIPTION,
    mixes_sign_job_with_admin,
    signer_session_response,
)
from sandbox.state import SandboxState, iso_millis
from sandbox.web import (
    JSON_UTF8,
    NO_STORE,
    first,
    get_state,
    is_form,
    json_response,
    parse_authorization,
    read_form,
    secret_matches,
)

logger = logging.getLogger(__name__)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def root_discovery(request: Request) -> Response:
    """The hand-written ``/.well-known/openid-configuration`` (transcript 1c)."""
    issuer = get_state(request).settings.issuer
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/me",
        "jwks_uri": f"{issuer}/jwks",
        "device_authorization_endpoint": f"{issuer}/device/auth",
        "introspection_endpoint": f"{issuer}/token/introspection",
        "revocation_endpoint": f"{issuer}/token/revocation",
        "end_session_endpoint": f"{issuer}/session/end",
        "scopes_supported": [
            "openid",
            "profile",
            "email",
            "sign:job",
            "users:read",
            "users:write",
            "users:token",
            "admin",
            "offline_access",
        ],  # fmt: skip
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            DEVICE_CODE_GRANT,
            TOKEN_EXCHANGE_GRANT,
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_post",
            "client_secret_basic",
        ],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "email",
            "name",
        ],  # fmt: skip
        "code_challenge_methods_supported": ["S256"],
        "service_documentation": "https://docs.pymthouse.com/api-reference/introduction",
    }
    return json_response(document, headers={"Cache-Control": "public, max-age=3600"})


def issuer_discovery(request: Request) -> Response:
    """node-oidc-provider's issuer-relative discovery document (transcript 1b)."""
    issuer = get_state(request).settings.issuer
    document = {
        "authorization_endpoint": f"{issuer}/auth",
        "device_authorization_endpoint": f"{issuer}/device/auth",
        "claims_parameter_supported": False,
        "claims_supported": ["sub", "email", "email_verified", "name", "sid", "auth_time", "iss"],
        "code_challenge_methods_supported": ["S256"],
        "end_session_endpoint": f"{issuer}/session/end",
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            DEVICE_CODE_GRANT,
        ],
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "authorization_response_iss_parameter_supported": True,
        "response_modes_supported": ["form_post", "fragment", "query"],
        "response_types_supported": ["code"],
        "scopes_supported": [
            "openid",
            "email",
            "profile",
            "sign:job",
            "users:read",
            "users:write",
            "users:token",
            "device:approve",
            "admin",
        ],  # fmt: skip
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_post",
            "client_secret_basic",
        ],
        "token_endpoint": f"{issuer}/token",
        "id_token_signing_alg_values_supported": ["RS256"],
        "pushed_authorization_request_endpoint": f"{issuer}/request",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{issuer}/me",
        "introspection_endpoint": f"{issuer}/token/introspection",
        "dpop_signing_alg_values_supported": ["ES256", "Ed25519", "EdDSA"],
        "revocation_endpoint": f"{issuer}/token/revocation",
        "claim_types_supported": ["normal"],
    }
    return json_response(document, media_type=JSON_UTF8)


def jwks(request: Request) -> Response:
    return json_response(
        get_state(request).keys.jwks(), media_type="application/jwk-set+json; charset=utf-8"
    )


def health(request: Request) -> Response:
    """Transcript 1a, with the signer reported running (it is served by this process)."""
    state = get_state(request)
    return json_response(
        {
            "status": "ok",
            "timestamp": iso_millis(datetime.now(UTC)),
            "version": __version__,
            "database": "connected",
            "signer": {"status": "running", "reachable": True, "ethAddress": state.signer_address},
        }
    )


def _library_error(
    status: int, error: str, description: str, *, issuer: str | None = None, **extra: str
) -> Response:
    """A node-oidc-provider error (charset content type, no-store, WWW-Authenticate on 401)."""
    headers = {"Cache-Control": "no-store"}
    if status == 401 and issuer is not None:
        headers["WWW-Authenticate"] = (
            f'Basic realm="{issuer}", error="{error}", error_description="{description}"'
        )
    body = {"error": error, "error_description": description, **extra}
    return json_response(body, status, headers=headers, media_type=JSON_UTF8)


def _custom_error(status: int, error: str, description: str) -> Response:
    """An error from a pymthouse-authored branch (plain application/json)."""
    return json_response({"error": error, "error_description": description}, status)


async def token_endpoint(request: Request) -> Response:
    """``POST /api/v1/oidc/token``: the dispatch of docs/upstream.md §P3."""
    state = get_state(request)
    issuer = state.settings.issuer
    if not is_form(request):
        return _library_error(
            400,
            "invalid_request",
            "only application/x-www-form-urlencoded content-type bodies are supported "
            "on POST /token",
        )
    pairs = await read_form(request)
    credentials = parse_authorization(request)
    if credentials.scheme == "basic":
        client_id, client_secret = credentials.client_id, credentials.client_secret
    else:
        client_id, client_secret = first(pairs, "client_id"), first(pairs, "client_secret")
    has_client_auth = credentials.scheme == "basic" or client_secret is not None
    authenticated = client_id == state.settings.m2m_client_id and secret_matches(
        client_secret, state.settings.m2m_client_secret
    )

    grant_type = first(pairs, "grant_type")
    if not grant_type:
        return _library_error(400, "invalid_request", "missing required parameter 'grant_type'")
    if grant_type == "client_credentials":
        return _client_credentials(
            state, pairs, client_id=client_id, has_auth=has_client_auth, authenticated=authenticated
        )
    if grant_type == TOKEN_EXCHANGE_GRANT:
        if targets_signer_audience(state, pairs):
            return signer_jwt_exchange(
                state, pairs, client_id=client_id, client_secret=client_secret
            )
        # The other global exchange branches (gateway session, device approval, Pattern-B)
        # are not emulated; the recorded no-auth answer is returned (transcript 10b).
        return _custom_error(400, "unsupported_token_type", "Unsupported subject token type")
    if grant_type == "authorization_code":
        web_client = web_client_authenticated(state, request, pairs)
        if web_client is False:
            return _library_error(
                401, "invalid_client", "client authentication failed", issuer=issuer
            )
        if web_client:
            return code_grant(state, pairs)
    if grant_type in ("refresh_token", "authorization_code", DEVICE_CODE_GRANT):
        if not authenticated:
            return _library_error(
                401, "invalid_client", "client authentication failed", issuer=issuer
            )
        # Transcript 12b: the M2M client may not use these grants.
        return _library_error(
            400, "invalid_request", "requested grant type is not allowed for this client"
        )
    return _library_error(400, "unsupported_grant_type", "unsupported grant_type requested")


def _client_credentials(
    state: SandboxState,
    pairs: list[tuple[str, str]],
    *,
    client_id: str | None,
    has_auth: bool,
    authenticated: bool,
) -> Response:
    settings = state.settings
    scopes = (first(pairs, "scope") or "").split()
    external_user_id = (first(pairs, "external_user_id") or "").strip()

    if not scopes or "sign:mint_user_token" in scopes:
        # pymthouse's user signer mint (§4.2); an empty scope lands here too (transcript 4c).
        if not authenticated:
            description = (
                "Unknown M2M client"
                if client_id != settings.m2m_client_id
                else "client authentication failed"
            )
            return _custom_error(401, "invalid_client", description)
        if mixes_sign_job_with_admin(scopes):
            return _custom_error(400, "invalid_scope", MIXED_SCOPE_DESCRIPTION)
        if not external_user_id:
            return _custom_error(400, "invalid_request", "external_user_id is required")
        return signer_session_response(state, external_user_id)

    if not has_auth:
        return _library_error(400, "invalid_request", "no client authentication mechanism provided")
    if not authenticated:
        return _library_error(
            401, "invalid_client", "client authentication failed", issuer=settings.issuer
        )
    if mixes_sign_job_with_admin(scopes):
        return _custom_error(400, "invalid_scope", MIXED_SCOPE_DESCRIPTION)
    if scopes == ["sign:job"] and not external_user_id:
        # App-owner signer mint (§4 dispatch step 3) has no end user to bill in the sandbox.
        return _custom_error(
            400, "invalid_request", "app-owner signer mint is not emulated by the sandbox"
        )
    # node-oidc-provider only knows the M2M client's admin scopes (sign:* are removed).
    allowed = [scope for scope in settings.m2m_allowed_scopes if not scope.startswith("sign:")]
    rejected = [scope for scope in scopes if scope not in allowed]
    if rejected:
        return _library_error(
            400, "invalid_scope", "requested scope is not allowed", scope=" ".join(rejected)
        )
    scope = " ".join(scopes)
    token, _claims = state.keys.mint_m2m_token(client_id=settings.m2m_client_id, scope=scope)
    return json_response(
        {"access_token": token, "expires_in": 3600, "token_type": "Bearer", "scope": scope},
        headers=dict(NO_STORE),
        media_type=JSON_UTF8,
    )


routes = [
    Route("/.well-known/openid-configuration", root_discovery, methods=["GET"]),
    Route("/api/v1/oidc/.well-known/openid-configuration", issuer_discovery, methods=["GET"]),
    Route("/api/v1/oidc/jwks", jwks, methods=["GET"]),
    Route("/api/v1/oidc/token", token_endpoint, methods=["POST"]),
    Route("/api/v1/health", health, methods=["GET"]),
]
