"""Account pages of our own (allauth's are included beside these by config/urls.py)."""

from __future__ import annotations

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("api/", views.api_keys, name="api_keys"),
    path("api/<int:api_key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
]
