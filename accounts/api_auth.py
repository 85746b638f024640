"""Bearer credentials on the JSON API, beside session auth: personal API keys
(``phk_…``, ``accounts.services.api_key_authenticate``) and OIDC access tokens
(mozilla-django-oidc).

mozilla-django-oidc verifies the JWS signature against the OP's JWKS (fetched on every
request; here from a cache shared with SSO) but, by default,
neither ``aud`` nor ``iss`` (its ``_verify_jws`` passes ``verify_aud: False``), and it
maps users by e-mail through userinfo, which pymthouse refuses for its own access tokens
(docs/identity.md, "Upstream facts relied on"). :class:`BearerTokenBackend` keeps the
library's key lookup and algorithm pinning and adds: RS256 only, ``iss`` = the configured
issuer, ``aud`` = the configured audience, ``client_id`` one of
``OIDC_API_TRUSTED_CLIENT_IDS``, ``exp``/``iat`` required, and a mapping by
(issuer, subject) to the local user that SSO created or linked, hence to the same
externalUserId. Unknown subjects are refused unless ``OIDC_API_CREATE_USERS`` is on.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer, django_auth

from accounts.models import API_KEY_PREFIX, User
from accounts.services import api_key_authenticate, user_create
from accounts.sso.adapter import app_issuer
from integrations.http import RequestException
from integrations.oidc import OidcError, signing_key

logger = logging.getLogger(__name__)


def provider_ids_for_issuer(issuer: str) -> list[str]:
    """The SSO providers (settings and admin) whose issuer is ``issuer``."""
    return [
        app.provider_id
        for app in get_adapter().list_apps(None, provider="openid_connect")
        if app_issuer(app) == issuer
    ]


class BearerTokenBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    def retrieve_matching_jwk(self, token: str) -> Any:
        """The signing key by ``kid`` from the cached JWKS (one fetch per cache period and
        one more on an unknown ``kid``), instead of the library's fetch per request."""
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            raise SuspiciousOperation("token header has no kid")
        try:
            return signing_key(self.OIDC_OP_JWKS_ENDPOINT, kid)
        except OidcError as exc:
            raise SuspiciousOperation(str(exc)) from exc

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        header = jwt.get_unverified_header(payload)
        if header.get("alg") != "RS256":
            raise SuspiciousOperation("token algorithm is not RS256")
        try:
            claims: dict[str, Any] = jwt.decode(
                payload,
                key,
                algorithms=["RS256"],
                audience=settings.OIDC_API_AUDIENCE,
                issuer=settings.OIDC_API_ISSUER,
                leeway=settings.OIDC_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"token rejected: {type(exc).__name__}") from exc
        aud = claims.get("aud")
        if isinstance(aud, list) and aud != [settings.OIDC_API_AUDIENCE]:
            raise SuspiciousOperation("token names audiences we do not trust")
        # pymthouse's access tokens name their OAuth client in ``client_id`` (RFC 9068;
        # docs/identity.md): any other client of the same issuer is not us.
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or client_id not in settings.OIDC_API_TRUSTED_CLIENT_IDS:
            raise SuspiciousOperation("token was issued to a client we do not trust")
        return claims

    def user_for_token(self, token: str) -> User | None:
        try:
            claims: dict[str, Any] = self.verify_token(token)
        except (SuspiciousOperation, jwt.PyJWTError, RequestException, KeyError) as exc:
            logger.info("API bearer token refused: %s", exc)
            return None
        provider_ids = provider_ids_for_issuer(str(claims["iss"]))
        account = (
            SocialAccount.objects.select_related("user")
            .filter(provider__in=provider_ids, uid=str(claims["sub"]))
            .first()
        )
        user: User | None = account.user if account is not None else None
        if user is None:
            user = self._maybe_create(claims, provider_ids)
        if user is None or not user.is_active:
            logger.info("API bearer token for an unknown or inactive subject refused")
            return None
        return user

    @staticmethod
    def _maybe_create(claims: dict[str, Any], provider_ids: list[str]) -> User | None:
        email = claims.get("email")
        if not (settings.OIDC_API_CREATE_USERS and provider_ids and isinstance(email, str)):
            return None
        if claims.get("email_verified") is not True:
            return None
        if User.objects.filter(email__iexact=email).exists():
            return None  # same rule as SSO: never attach to an existing account by e-mail
        with transaction.atomic():
            user = user_create(email=email, email_verified=True)
            SocialAccount.objects.create(
                user=user, provider=provider_ids[0], uid=str(claims["sub"]), extra_data={}
            )
        return user


class OIDCBearer(HttpBearer):
    """django-ninja auth: ``Authorization: Bearer <personal API key | access token>``.

    A ``phk_…`` bearer is a personal API key and only ever checked as one (it never
    reaches the OIDC verifier or its logs); anything else is an OIDC access token. A key
    over its rate limit raises ``ApiKeyRateLimitedError`` (429, config/api.py).

    A bearer that is refused is a 401 at once: the request does not fall through to
    session auth (where a script's POST would meet a CSRF 403 that says nothing about
    its credential).
    """

    def authenticate(self, request: HttpRequest, token: str) -> User:
        if token.startswith(API_KEY_PREFIX):
            user = api_key_authenticate(secret=token)
        else:
            user = BearerTokenBackend().user_for_token(token)
        if user is None:
            raise AuthenticationError
        request.user = user
        return user


#: Bearer first (no CSRF: nothing ambient), then the browser's session (with CSRF).
API_AUTH = [OIDCBearer(), django_auth]
