"""The project's URLs plus one view that fails, to see the styled 500 page (test_layout)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns

FAILING_PATH = "__layout-test__/server-error/"


def server_error(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("test_layout: the styled 500 page")


urlpatterns = [path(FAILING_PATH, server_error), *project_urlpatterns]
