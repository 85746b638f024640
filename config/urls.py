from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from accounts import views as accounts_views
from config.api import api

urlpatterns = [
    path("", accounts_views.home, name="home"),
    path("healthz", accounts_views.healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("", include("inference.urls")),
    path("accounts/", include("accounts.sso.urls")),  # hardened openid_connect views
    path("accounts/", include("accounts.urls")),  # the API page (personal API keys)
    path("billing/", include("billing.urls")),
    path("accounts/", include("allauth.urls")),
    path("staff/billing/", include("usage.urls")),
    path("admin/", admin.site.urls),
]
# MEDIA_URL is deliberately not served: generated images are private and are
# only streamed by inference views after an ownership check.

handler500 = "config.errors.server_error"
