"""RFC 8693 exchanges of a user JWT for a signer session (docs/upstream.md §P3.3).

* ``POST /api/v1/apps/{app}/oidc/token`` (app-scoped): a programmatic user JWT (or a
  signer JWT) with ``sign:job`` for this app becomes a SignerSession plus
  ``correlation_id`` (transcript 10a). Per-user API keys are not emulated, so key-shaped
  subjects are refused with ``invalid_grant``.
* ``POST /api/v1/oidc/token`` with ``subject_token_type=…:access_token`` and
  ``resource``/``audience`` = the issuer (the signer audience): the "signer-JWT
  exchange" that ``@pymthouse/builder-sdk`` ``exchangeForSignerSession`` makes, dispatched
  before the gateway and Pattern-B branches (pymthouse/pymthouse@5ee7cfc7
  ``src/app/api/v1/oidc/[...oidc]/route.ts``; ``src/lib/oidc/signer-jwt-token-exchange.ts``
  ``handleSignerJwtTokenExchange``): :func:`signer_jwt_exchange`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.keys import TokenError, token_scopes
from sandbox.pymthouse.sessions import ACCESS_TOKEN_TYPE, signer_session_response
from sandbox.state import SandboxState
from sandbox.web import (
    NO_STORE,
    every,
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
API_KEY_TOKEN_TYPE = "urn:pymthouse:oauth:token-type:api_key"
SIGNER_AUDIENCES = ("livepeer-clearinghouse", "livepeer-remote-signer")
_KEY_SHAPED = re.compile(r"^(pmth_(?!cs_).+|app_[0-9a-f]{24}_.+|[0-9a-fA-F]{32,})$")
NOT_FOUND_PADDING_SECONDS = 0.05
DEVICE_CODE_RESOURCE_PREFIX = "urn:pmth:device_code:"


async def app_token_exchange(request: Request) -> Response:
    state = get_state(request)
    settings = state.settings
    correlation_id = str(uuid.uuid4())

    def error(status: int, code: str, description: str, **headers: str) -> Response:
        body = {"error": code, "error_description": description, "correlation_id": correlation_id}
        return json_response(body, status, headers=headers or None)

    if not is_form(request):
        return error(
            400, "invalid_request", "content-type must be application/x-www-form-urlencoded"
        )
    if request.path_params["app"] != settings.app_id:
        await asyncio.sleep(NOT_FOUND_PADDING_SECONDS)
        return error(404, "invalid_request", "app not found")

    pairs = await read_form(request)
    credentials = parse_authorization(request)
    if credentials.scheme == "basic":
        client_id, client_secret = credentials.client_id, credentials.client_secret
    else:
        client_id, client_secret = first(pairs, "client_id"), first(pairs, "client_secret")
    if credentials.scheme == "basic" or client_id is not None or client_secret is not None:
        if client_id != settings.m2m_client_id or not secret_matches(
            client_secret, settings.m2m_client_secret
        ):
            return error(
                401,
                "invalid_client",
                "client authentication failed",
                **{"WWW-Authenticate": 'Basic realm="token"'},
            )

    if first(pairs, "grant_type") != TOKEN_EXCHANGE_GRANT:
        return error(400, "invalid_request", f"grant_type must be {TOKEN_EXCHANGE_GRANT}")
    subject_token = first(pairs, "subject_token")
    if not subject_token:
        return error(400, "invalid_request", "subject_token is required")
    requested = first(pairs, "requested_token_type")
    if requested and requested != ACCESS_TOKEN_TYPE:
        return error(400, "invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    allowed_targets = (settings.issuer, *SIGNER_AUDIENCES)
    for target in every(pairs, "resource") + every(pairs, "audience"):
        if target not in allowed_targets:
            return error(400, "invalid_target", "resource/audience is not a signer audience")

    subject_token_type = first(pairs, "subject_token_type")
    if subject_token_type == API_KEY_TOKEN_TYPE or (
        subject_token_type == ACCESS_TOKEN_TYPE and _KEY_SHAPED.match(subject_token)
    ):
        return error(400, "invalid_grant", "subject_token is not a valid API key for this issuer")
    if subject_token_type != ACCESS_TOKEN_TYPE:
        return error(400, "unsupported_token_type", "Unsupported subject token type")
    try:
        claims = state.keys.verify(subject_token)
    except TokenError:
        return error(400, "invalid_grant", "subject_token is invalid or expired")
    if claims.get("client_id") != settings.app_id:
        return error(400, "invalid_grant", "subject_token client does not match this app")
    if "sign:job" not in token_scopes(claims):
        return error(400, "invalid_grant", "subject_token must include sign:job scope")
    external_user_id = claims.get("external_user_id")
    if not isinstance(external_user_id, str) or not external_user_id:
        return error(400, "invalid_grant", "subject_token has no external_user_id")

    return signer_session_response(
        state,
        external_user_id,
        correlation_id=correlation_id,
        caps=every(pairs, "caps") or None,
        discovery_url=first(pairs, "discovery_url") or None,
    )


def targets_signer_audience(state: SandboxState, pairs: list[tuple[str, str]]) -> bool:
    """``isSignerJwtTokenExchangeRequest``: an access-token subject whose ``resource`` or
    any ``audience`` is the signer audience (the issuer; trailing slashes ignored), and
    not a device-code binding."""
    resource = (first(pairs, "resource") or "").strip()
    if resource.startswith(DEVICE_CODE_RESOURCE_PREFIX):
        return False
    if (first(pairs, "subject_token_type") or "").strip() != ACCESS_TOKEN_TYPE:
        return False
    expected = state.settings.issuer.rstrip("/")
    targets = [resource, *every(pairs, "audience")]
    return any(target.strip().rstrip("/") == expected for target in targets if target.strip())


def signer_jwt_exchange(
    state: SandboxState,
    pairs: list[tuple[str, str]],
    *,
    client_id: str | None,
    client_secret: str | None,
) -> Response:
    """``handleSignerJwtTokenExchange``: every refusal is ``400 {error, error_description}``
    (the route's ``TokenExchangeError`` catch); success carries the deprecation headers."""
    settings = state.settings

    def refuse(code: str, description: str) -> Response:
        return json_response({"error": code, "error_description": description}, 400)

    secrets_by_client = {
        settings.m2m_client_id: settings.m2m_client_secret,
        settings.web_client_id: settings.web_client_secret,
    }
    expected_secret = secrets_by_client.get(client_id or "")
    if expected_secret is None or not secret_matches(client_secret, expected_secret):
        return refuse("invalid_client", "Invalid client credentials")
    if client_id != settings.m2m_client_id:  # the web_ sibling has neither scope
        return refuse(
            "invalid_scope",
            "Requires sign:mint_user_token or users:token on the confidential client",
        )
    try:
        claims = state.keys.verify(first(pairs, "subject_token") or "")
    except TokenError:
        return refuse("invalid_grant", "subject_token is invalid or expired")
    if claims.get("client_id") != settings.app_id:
        return refuse("invalid_grant", "subject_token does not belong to this developer app")
    if "sign:job" not in (token_scopes(claims) or ["sign:job"]):
        return refuse("invalid_grant", "subject_token must include sign:job scope")
    external_user_id = claims.get("external_user_id")
    if not isinstance(external_user_id, str) or not external_user_id:
        return refuse("invalid_grant", "subject_token has no external_user_id")
    minted = signer_session_response(state, external_user_id)
    if minted.status_code != 200:
        return minted  # the mint's own 402 (balance gate)
    session = json.loads(bytes(minted.body))
    body = {
        name: session[name]
        for name in (
            "access_token",
            "token_type",
            "expires_in",
            "scope",
            "issued_token_type",
            "balanceUsdMicros",
            "lifetimeGrantedUsdMicros",
        )
    }
    return json_response(
        body,
        headers={
            **NO_STORE,
            "Deprecation": "true",
            "Link": '</api/v1/apps/{clientId}/oidc/token>; rel="successor-version"',
            "Sunset": "2026-10-01",
        },
    )


routes = [Route("/api/v1/apps/{app}/oidc/token", app_token_exchange, methods=["POST"])]
