"""Account pages of our own (allauth's are included beside these by config/urls.py)."""

from __future__ import annotations

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("api/", views.api_keys, name="api_keys"),
    path("api/<int:api_key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("api/webhook/", views.webhook_endpoint_set, name="webhook_set"),
    path("api/webhook/rotate/", views.webhook_secret_rotate, name="webhook_rotate"),
    path("api/webhook/delete/", views.webhook_endpoint_delete, name="webhook_delete"),
    path("api/webhook/test/", views.webhook_test_send, name="webhook_test"),
]
