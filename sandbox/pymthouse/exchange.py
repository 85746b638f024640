"""``POST /api/v1/apps/{app}/oidc/token``: app-scoped RFC 8693 exchange (docs/upstream.md §P3.3).

A programmatic user JWT (or a signer JWT) with ``sign:job`` for this app becomes a
SignerSession plus ``correlation_id`` (transcript 10a). Per-user API keys are not
emulated, so key-shaped subjects are refused with ``invalid_grant``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.keys import TokenError, token_scopes
from sandbox.pymthouse.sessions import ACCESS_TOKEN_TYPE, signer_session_response
from sandbox.web import (
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


routes = [Route("/api/v1/apps/{app}/oidc/token", app_token_exchange, methods=["POST"])]
