"""Same paths and names as allauth's openid_connect URLs, served by the hardened views.

Mounted before ``allauth.urls`` so these win; the redirect URI to register at the
provider stays ``/accounts/oidc/<provider_id>/login/callback/``.
"""

from __future__ import annotations

from django.urls import path

from accounts.sso import views

urlpatterns = [
    path("oidc/<str:provider_id>/login/", views.login, name="openid_connect_login"),
    path(
        "oidc/<str:provider_id>/login/callback/",
        views.callback,
        name="openid_connect_callback",
    ),
]
