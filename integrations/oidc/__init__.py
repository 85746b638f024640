"""OpenID Connect for relying parties: discovery, JWKS and strict JWT verification.

Used by the browser sign-in (``accounts.sso``, allauth's openid_connect provider) for ID
tokens and by the JSON API (``accounts.api_auth``, mozilla-django-oidc) for bearer access
tokens. What is checked, and why (OIDC Core §3.1.3.7; RFC 8725 §2-§3; RFC 9700 §2.1):

* the discovery document names exactly the configured issuer (mix-up defence; the one
  discovery client, shared with the pymthouse client, is ``integrations.oidc.discovery``);
* the JOSE header's ``alg`` is one we expect (RS256 by default): ``none`` and HS256 are
  refused before any key is looked up, so a public key can never become an HMAC secret;
  headers that bring their own key (``jku``, ``jwk``, ``x5u``, ``x5c``) are refused;
* the key comes from the issuer's JWKS by ``kid`` (refetched once on an unknown ``kid``:
  a key rotation), and must be an RSA signing key;
* ``iss`` equals the issuer, ``aud`` is exactly the expected audience (no extra
  audiences), ``exp``/``iat`` are present and ``exp``/``nbf`` hold within the leeway;
* ``nonce`` equals the one we sent, when we sent one.

Tokens are never logged; errors carry a reason, never the token.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from integrations.oidc.discovery import (
    WELL_KNOWN_PATH,
    DiscoveryError,
    cache_key,
    cached,
    fetch_json,
    local_copies_clear,
    remember,
)
from integrations.oidc.discovery import discover as _discover

__all__ = [
    "WELL_KNOWN_PATH",
    "OidcError",
    "discover",
    "local_copies_clear",
    "signing_key",
    "verify_jwt",
]

logger = logging.getLogger(__name__)

FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c")
DEFAULT_LEEWAY_SECONDS = 60


class OidcError(Exception):
    """Discovery, key lookup or token verification failed (the message names why)."""


def discover(issuer: str) -> dict[str, Any]:
    """The issuer's discovery document (cached; ``integrations.oidc.discovery``): its
    ``issuer`` must equal ``issuer`` and it must name the authorization endpoint."""
    try:
        return _discover(issuer, required=("authorization_endpoint",))
    except DiscoveryError as exc:
        raise OidcError(str(exc)) from exc


def _jwks(jwks_uri: str, *, refresh: bool) -> dict[str, Any]:
    key = cache_key("jwks", jwks_uri)
    keys = None if refresh else cached(key)
    if keys is None:
        try:
            keys = fetch_json(jwks_uri)
        except DiscoveryError as exc:
            raise OidcError(str(exc)) from exc
        remember(key, keys)
    return keys


def _find_key(jwks: dict[str, Any], kid: str) -> dict[str, Any] | None:
    for candidate in jwks.get("keys") or []:
        if isinstance(candidate, dict) and candidate.get("kid") == kid:
            return candidate
    return None


def signing_key(jwks_uri: str, kid: str) -> Any:
    """The RSA public key ``kid`` from the JWKS (refetched once if unknown: a rotation)."""
    found = _find_key(_jwks(jwks_uri, refresh=False), kid)
    if found is None:
        found = _find_key(_jwks(jwks_uri, refresh=True), kid)
    if found is None:
        raise OidcError("token signed with a key that is not in the issuer's JWKS")
    if found.get("kty") != "RSA" or found.get("use", "sig") != "sig":
        raise OidcError("JWKS key is not an RSA signing key")
    try:
        return RSAAlgorithm.from_jwk(json.dumps(found))
    except (jwt.PyJWTError, ValueError) as exc:
        raise OidcError("JWKS key could not be loaded") from exc


def verify_jwt(
    token: str,
    *,
    issuer: str,
    audience: str,
    jwks_uri: str,
    algorithms: Sequence[str] = ("RS256",),
    nonce: str | None = None,
    leeway: int = DEFAULT_LEEWAY_SECONDS,
) -> dict[str, Any]:
    """Verify ``token`` as described in the module docstring; return its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise OidcError("not a signed JWT") from exc
    alg = header.get("alg")
    if alg not in algorithms or str(alg).lower() == "none" or str(alg).startswith("HS"):
        raise OidcError(f"signing algorithm {alg!r} is not accepted")
    if any(name in header for name in FORBIDDEN_HEADERS):
        raise OidcError("token header carries its own key reference")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcError("token header has no kid")
    key = signing_key(jwks_uri, kid)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[str(alg)],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise OidcError("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise OidcError("token audience is not ours") from exc
    except jwt.InvalidIssuerError as exc:
        raise OidcError("token issuer is not the configured issuer") from exc
    except jwt.PyJWTError as exc:
        raise OidcError(f"token rejected: {type(exc).__name__}") from exc
    aud = claims.get("aud")
    if isinstance(aud, list) and aud != [audience]:
        raise OidcError("token names audiences we do not trust")
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
            raise OidcError("token nonce does not match the one sent")
    return claims
