"""The project's URLs plus views that fail, for tests/config/test_errors.py."""

from __future__ import annotations

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def _bug(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def _database_gone(request: HttpRequest) -> HttpResponse:
    try:
        raise OperationalError("server closed the connection unexpectedly")
    except OperationalError as exc:
        raise ValueError("wrapped by a library") from exc


urlpatterns = [
    path("api/v1/__test__/bug", _bug),
    path("__test__/bug", _bug),
    path("__test__/database-gone", _database_gone),
    *project_urlpatterns,
]
handler500 = "config.errors.server_error"
