"""The OAuth2 adapter behind the hardened provider: strict discovery and ID token checks."""

from __future__ import annotations

import logging
from typing import Any

from allauth.socialaccount.models import SocialApp, SocialLogin, SocialToken
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.http import HttpRequest

from integrations.oidc import OidcError, discover, verify_jwt

logger = logging.getLogger(__name__)

# Discovery fields an app's "openid_configuration_overrides" may never replace.
PINNED_FIELDS = ("issuer", "jwks_uri")


def app_issuer(app: SocialApp) -> str:
    """The issuer an app is configured with (its ``server_url``, without the well-known)."""
    server_url = str(app.settings["server_url"]).rstrip("/")
    return server_url.split("/.well-known/")[0]


class HardenedOIDCAdapter(OpenIDConnectOAuth2Adapter):  # type: ignore[misc]
    #: The nonce sent with this attempt, set by the callback view from the stashed state.
    expected_nonce: str | None = None

    @property
    def openid_config(self) -> dict[str, Any]:
        if not hasattr(self, "_openid_config"):
            app = self.get_provider().app
            try:
                config = dict(discover(app_issuer(app)))
            except OidcError as exc:
                raise OAuth2Error(f"OIDC discovery failed: {exc}") from exc
            overrides = app.settings.get("openid_configuration_overrides", {})
            config.update({k: v for k, v in overrides.items() if k not in PINNED_FIELDS})
            self._openid_config = config
        return self._openid_config

    def complete_login(
        self, request: HttpRequest, app: SocialApp, token: SocialToken, **kwargs: Any
    ) -> SocialLogin:
        id_token = kwargs["response"].get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OAuth2Error("the provider returned no ID token")
        if not self.expected_nonce:
            raise OAuth2Error("no nonce was stashed for this sign-in attempt")
        try:
            claims = verify_jwt(
                id_token,
                issuer=app_issuer(app),
                audience=app.client_id,
                jwks_uri=self.openid_config["jwks_uri"],
                algorithms=app.settings.get("id_token_algorithms", ["RS256"]),
                nonce=self.expected_nonce,
                leeway=settings.OIDC_LEEWAY_SECONDS,
            )
        except OidcError as exc:
            logger.warning("SSO via %s refused: %s", app.provider_id, exc)
            raise OAuth2Error(f"Invalid id_token: {exc}") from exc
        data: dict[str, Any] = {"id_token": claims}
        # pymthouse refuses its own access token at userinfo (docs/identity.md), so
        # identity comes from the verified ID token unless an app opts in.
        if app.settings.get("fetch_userinfo", False):
            userinfo = self._fetch_user_info(token.token)
            if userinfo.get("sub") != claims["sub"]:
                raise OAuth2Error("userinfo describes another subject")
            data["userinfo"] = userinfo
        login: SocialLogin = self.get_provider().sociallogin_from_response(request, data)
        return login
