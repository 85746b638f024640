"""The project's URLs plus one view that fails, to see the styled 500 page (test_layout)."""

from __future__ import annotations

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns

FAILING_PATH = "__layout-test__/server-error/"
DATABASE_DOWN_PATH = "__layout-test__/database-down/"


def server_error(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("test_layout: the styled 500 page")


def database_down(request: HttpRequest) -> HttpResponse:
    raise OperationalError("test_layout: the database is restarting")


urlpatterns = [
    path(FAILING_PATH, server_error),
    path(DATABASE_DOWN_PATH, database_down),
    *project_urlpatterns,
]
handler500 = "config.errors.server_error"  # the project's, as in config/urls.py
