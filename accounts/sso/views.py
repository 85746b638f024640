"""Login and callback views for the hardened openid_connect provider (same URLs as allauth)."""

from __future__ import annotations

import logging
from typing import Any

from allauth.socialaccount.helpers import render_authentication_error
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView, OAuth2LoginView
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse

from accounts.sso.adapter import HardenedOIDCAdapter, app_issuer
from accounts.sso.provider import NONCE_STATE_KEY

logger = logging.getLogger(__name__)


class HardenedCallbackView(OAuth2CallbackView):  # type: ignore[misc]
    adapter: HardenedOIDCAdapter

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        provider = self.adapter.get_provider()
        # RFC 9207: an authorization response that names an issuer must name ours.
        sent_issuer = request.GET.get("iss")
        if sent_issuer is not None and sent_issuer != app_issuer(provider.app):
            logger.warning("SSO callback for %s names another issuer", provider.app.provider_id)
            return render_authentication_error(request, provider)  # type: ignore[no-any-return]
        try:
            response: HttpResponse = super().dispatch(request, *args, **kwargs)
        except OAuth2Error as exc:  # discovery failed before allauth's own error handling
            logger.warning("SSO callback for %s failed: %s", provider.app.provider_id, exc)
            error: HttpResponse = render_authentication_error(request, provider, exception=exc)
            return error
        return response

    def _get_state(self, request: HttpRequest, provider: Any) -> tuple[Any, Any]:
        state, response = super()._get_state(request, provider)
        if state is not None:
            self.adapter.expected_nonce = state.get(NONCE_STATE_KEY)
        return state, response


@login_not_required
def login(request: HttpRequest, provider_id: str) -> HttpResponse:
    try:
        view = OAuth2LoginView.adapter_view(HardenedOIDCAdapter(request, provider_id))
        response: HttpResponse = view(request)
    except SocialApp.DoesNotExist as exc:
        raise Http404 from exc
    return response


@login_not_required
def callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    try:
        view = HardenedCallbackView.adapter_view(HardenedOIDCAdapter(request, provider_id))
        response: HttpResponse = view(request)
    except SocialApp.DoesNotExist as exc:
        raise Http404 from exc
    return response
