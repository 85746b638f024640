"""Browser sign-in at pymthouse's paths: authorize, login page, code grant, userinfo, end-session.

Behaviour observed against pymthouse/pymthouse@5ee7cfc (docs/identity.md): the confidential
``web_`` client uses ``authorization_code``; PKCE ``S256`` is accepted, ``plain`` refused at
the authorize step, and omitting PKCE is accepted; the callback carries ``code``, ``state``
and ``iss`` (RFC 9207); the ID token is RS256 with ``aud`` = the client, the access token an
``at+jwt`` with ``aud`` = the issuer; userinfo answers 401 ``invalid_token`` to that access
token. The login and consent pages are replaced by one small identity picker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
import urllib.parse
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.utils import base64url_encode
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.keys import TokenError
from sandbox.sso import (
    ACCESS_TOKEN_TTL_SECONDS,
    AUTHORIZATION_CODE_TTL_SECONDS,
    ID_TOKEN_TTL_SECONDS,
    AuthorizationCode,
)
from sandbox.state import SandboxState
from sandbox.web import (
    JSON_UTF8,
    NO_STORE,
    first,
    get_state,
    json_response,
    parse_authorization,
    read_form,
    secret_matches,
)

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "testserver"})


def _error(status: int, error: str, description: str) -> Response:
    return json_response(
        {"error": error, "error_description": description},
        status,
        headers={"Cache-Control": "no-store"},
        media_type=JSON_UTF8,
    )


def redirect_uri_allowed(state: SandboxState, uri: str) -> bool:
    """Exactly a registered URI, or (none registered) an http(s) loopback callback."""
    registered = state.settings.web_redirect_uris
    if registered:
        return uri in registered
    parts = urllib.parse.urlsplit(uri)
    return (
        parts.scheme in ("http", "https")
        and (parts.hostname or "") in LOOPBACK_HOSTS
        and not parts.fragment
    )


def _redirect_with(uri: str, params: dict[str, str]) -> Response:
    separator = "&" if urllib.parse.urlsplit(uri).query else "?"
    return RedirectResponse(uri + separator + urllib.parse.urlencode(params), status_code=303)


def authorize(request: Request) -> Response:
    """``GET {issuer}/auth``: validate the request, then show the identity picker."""
    state = get_state(request)
    query = request.query_params
    client_id = query.get("client_id", "")
    redirect_uri = query.get("redirect_uri", "")
    if client_id != state.settings.web_client_id:
        return _error(400, "invalid_client", "client is invalid")
    if not redirect_uri_allowed(state, redirect_uri):
        return _error(400, "invalid_redirect_uri", "redirect_uri did not match any registered")
    callback_state = query.get("state")

    def refuse(error: str, description: str) -> Response:
        params = {"error": error, "error_description": description}
        if callback_state is not None:
            params["state"] = callback_state
        params["iss"] = state.settings.issuer
        return _redirect_with(redirect_uri, params)

    if query.get("response_type") != "code":
        return refuse("unsupported_response_type", "unsupported response_type requested")
    scopes = query.get("scope", "").split()
    if "openid" not in scopes:
        return refuse("invalid_request", "openid scope must be requested for this request")
    challenge = query.get("code_challenge")
    method = query.get("code_challenge_method")
    if method is not None and method != "S256":
        return refuse("invalid_request", "not supported value of code_challenge_method")
    if challenge is not None and method is None:
        # node-oidc-provider would assume plain, which pymthouse does not allow.
        return refuse("invalid_request", "not supported value of code_challenge_method")
    interaction = state.sso.start(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
        state=callback_state,
        nonce=query.get("nonce"),
        code_challenge=challenge,
    )
    return RedirectResponse(f"/oidc/interaction?uid={interaction.uid}", status_code=303)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · pymthouse sandbox</title>
<style>
body{{font-family:system-ui,sans-serif;background:#0f1115;color:#e6e6e6;display:grid;
place-items:center;min-height:100vh;margin:0}}
.card{{background:#181b22;border:1px solid #2a2f3a;border-radius:12px;padding:28px;width:340px}}
h1{{font-size:20px;margin:0 0 6px}}p{{color:#9aa3b2;font-size:14px}}
button{{display:block;width:100%;margin:8px 0;padding:10px 12px;border-radius:8px;
border:1px solid #3b4252;background:#232733;color:#e6e6e6;font-size:14px;text-align:left;
cursor:pointer}}button:hover{{border-color:#7c5cff}}button.cancel{{color:#9aa3b2}}
small{{color:#9aa3b2;display:block}}
</style></head><body><main class="card">
<h1>Sign in to pymthouse</h1>
<p>Sandbox identity provider. Pick who you are; <b>{client}</b> will receive your email
and name.</p>
<form method="post" action="/oidc/interaction?uid={uid}">
{buttons}
<button class="cancel" name="cancel" value="1">Cancel</button>
</form></main></body></html>"""


def interaction_page(request: Request) -> Response:
    state = get_state(request)
    interaction = state.sso.interactions.get(request.query_params.get("uid", ""))
    if interaction is None:
        return HTMLResponse("<h1>This sign-in request has expired.</h1>", status_code=400)
    buttons = "\n".join(
        f'<button name="identity" value="{html.escape(identity.sub)}">'
        f"{html.escape(identity.name)}<small>{html.escape(identity.email)}</small></button>"
        for identity in state.sso.identities.values()
    )
    body = PAGE.format(
        client=html.escape(interaction.client_id), uid=html.escape(interaction.uid), buttons=buttons
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


async def interaction_submit(request: Request) -> Response:
    state = get_state(request)
    interaction = state.sso.interactions.get(request.query_params.get("uid", ""))
    if interaction is None:
        return HTMLResponse("<h1>This sign-in request has expired.</h1>", status_code=400)
    pairs = await read_form(request)
    params: dict[str, str] = {}
    if first(pairs, "cancel"):
        del state.sso.interactions[interaction.uid]
        params = {"error": "access_denied", "error_description": "End-User aborted interaction"}
    else:
        chosen = first(pairs, "identity") or ""
        identity = state.sso.identities.get(chosen) or next(
            (i for i in state.sso.identities.values() if i.email == first(pairs, "email")), None
        )
        if identity is None:
            return HTMLResponse("<h1>Unknown identity.</h1>", status_code=400)
        params = {"code": state.sso.issue_code(interaction, identity).code}
    if interaction.state is not None:
        params["state"] = interaction.state
    params["iss"] = state.settings.issuer
    return _redirect_with(interaction.redirect_uri, params)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def web_client_authenticated(state: SandboxState, request: Request, pairs: Any) -> bool | None:
    """True/False when the request names the web client, None when it names another client."""
    credentials = parse_authorization(request)
    if credentials.scheme == "basic":
        client_id, client_secret = credentials.client_id, credentials.client_secret
    else:
        client_id, client_secret = first(pairs, "client_id"), first(pairs, "client_secret")
    if client_id != state.settings.web_client_id:
        return None
    return secret_matches(client_secret, state.settings.web_client_secret)


def code_grant(state: SandboxState, pairs: list[tuple[str, str]]) -> Response:
    """``grant_type=authorization_code`` for the (already authenticated) web client."""
    invalid_grant = _error(400, "invalid_grant", "grant request is invalid")
    code = state.sso.codes.get(first(pairs, "code") or "")
    if code is None or code.used:
        if code is not None:
            del state.sso.codes[code.code]  # a replayed code revokes it
        return invalid_grant
    code.used = True
    if time.time() - code.created_at > AUTHORIZATION_CODE_TTL_SECONDS:
        return invalid_grant
    if first(pairs, "redirect_uri") != code.redirect_uri:
        return invalid_grant
    verifier = first(pairs, "code_verifier")
    if code.code_challenge is not None:
        if not verifier or not hmac.compare_digest(_s256(verifier), code.code_challenge):
            return _error(400, "invalid_grant", "PKCE verification failed")
    elif verifier is not None:
        return _error(400, "invalid_grant", "PKCE verification failed")
    id_token = mint_id_token(state, code)
    access_token = _access_token(state, code)
    body = {
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_TTL_SECONDS,
        "id_token": id_token,
        "refresh_token": secrets.token_urlsafe(32),
        "scope": code.scope,
        "token_type": "Bearer",
    }
    logger.info("authorization code exchanged for %s", code.identity.sub)
    return json_response(body, headers=dict(NO_STORE), media_type=JSON_UTF8)


def _access_token(state: SandboxState, code: AuthorizationCode) -> str:
    now = int(time.time())
    claims = {
        "jti": secrets.token_urlsafe(32),
        "sub": code.identity.sub,
        "iat": now,
        "exp": now + ACCESS_TOKEN_TTL_SECONDS,
        "scope": code.scope,
        "client_id": code.client_id,
        "iss": state.settings.issuer,
        "aud": state.settings.issuer,
    }
    return state.keys.sign_compact({"alg": "RS256", "typ": "at+jwt", "kid": state.keys.kid}, claims)


def mint_id_token(state: SandboxState, code: AuthorizationCode) -> str:
    """The ID token, made wrong on purpose when the control API asked for it."""
    mode = state.sso.take_misbehaviour()
    now = int(time.time())
    identity = code.identity
    claims: dict[str, Any] = {
        "sub": identity.sub,
        "email": identity.email,
        "email_verified": identity.email_verified,
        "name": identity.name,
        "nonce": code.nonce,
        "aud": code.client_id,
        "exp": now + ID_TOKEN_TTL_SECONDS,
        "iat": now,
        "auth_time": now,
        "iss": state.settings.issuer,
    }
    if code.nonce is None:
        del claims["nonce"]
    header: dict[str, Any] = {"alg": "RS256", "kid": state.keys.kid}
    if mode is not None:
        logger.info("minting a misbehaving ID token: %s", mode)
    if mode == "wrong_aud":
        claims["aud"] = "web_000000000000000000000000"
    elif mode == "extra_aud":
        claims["aud"] = [code.client_id, "web_000000000000000000000000"]
    elif mode == "wrong_iss":
        claims["iss"] = "https://evil.example/api/v1/oidc"
    elif mode == "bad_nonce":
        claims["nonce"] = secrets.token_urlsafe(16)
    elif mode == "missing_nonce":
        claims.pop("nonce", None)
    elif mode == "expired":
        claims["iat"] = claims["auth_time"] = now - 3 * ID_TOKEN_TTL_SECONDS
        claims["exp"] = now - 2 * ID_TOKEN_TTL_SECONDS
    if mode == "alg_none":
        return _compact({"alg": "none", "kid": state.keys.kid}, claims, b"")
    if mode == "hs256_public_key":
        unsigned = _compact({"alg": "HS256", "kid": state.keys.kid}, claims, None)
        mac = hmac.new(state.keys.public_key_pem(), unsigned.encode(), hashlib.sha256).digest()
        return unsigned + "." + base64url_encode(mac).decode()
    if mode == "unknown_kid":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _sign_with(stranger, {"alg": "RS256", "kid": str(uuid.uuid4())}, claims)
    return state.keys.sign_compact(header, claims)


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes | None) -> str:
    parts = [
        base64url_encode(json.dumps(part, separators=(",", ":")).encode()).decode()
        for part in (header, claims)
    ]
    if signature is None:
        return ".".join(parts)
    return ".".join([*parts, base64url_encode(signature).decode()])


def _sign_with(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    unsigned = _compact(header, claims, None)
    signature = key.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
    return unsigned + "." + base64url_encode(signature).decode()


async def userinfo(request: Request) -> Response:
    """``{issuer}/me``: pymthouse refuses the web flow's access token (§3.5) unless told."""
    state = get_state(request)
    credentials = parse_authorization(request)
    refused = _error(401, "invalid_token", "invalid token provided")
    if state.sso.userinfo_mode == "refuse" or credentials.scheme != "bearer":
        return refused
    try:
        claims = state.keys.verify(credentials.token or "")
    except TokenError:
        return refused
    identity = state.sso.identities.get(str(claims.get("sub")))
    if identity is None:
        return refused
    return json_response(
        {
            "sub": identity.sub,
            "email": identity.email,
            "email_verified": identity.email_verified,
            "name": identity.name,
        },
        media_type=JSON_UTF8,
    )


async def end_session(request: Request) -> Response:
    """``{issuer}/session/end``: back to an allowed post-logout URI, else a signed-out page."""
    state = get_state(request)
    values: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        values.update(dict(await read_form(request)))
    target = values.get("post_logout_redirect_uri")
    if target and redirect_uri_allowed(state, target):
        params = {"state": values["state"]} if "state" in values else {}
        return _redirect_with(target, params) if params else RedirectResponse(target, 303)
    return HTMLResponse("<h1>You are signed out of the pymthouse sandbox.</h1>")


routes = [
    Route("/api/v1/oidc/auth", authorize, methods=["GET"]),
    Route("/oidc/interaction", interaction_page, methods=["GET"]),
    Route("/oidc/interaction", interaction_submit, methods=["POST"]),
    Route("/api/v1/oidc/me", userinfo, methods=["GET", "POST"]),
    Route("/api/v1/oidc/session/end", end_session, methods=["GET", "POST"]),
]
