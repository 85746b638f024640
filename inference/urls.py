"""Pages of the inference app, included at the site root by config/urls.py."""

from __future__ import annotations

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("gallery/", views.gallery, name="gallery"),
    path("generations/<uuid:generation_id>/", views.detail, name="detail"),
    path("generations/<uuid:generation_id>/image", views.image, name="image"),
    path("generations/<uuid:generation_id>/delete/", views.delete, name="delete"),
    path("generations/<uuid:generation_id>/cancel/", views.cancel, name="cancel"),
    path("generations/<uuid:generation_id>/retry/", views.retry, name="retry"),
]
