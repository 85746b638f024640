"""A database that cannot be reached is a 503 with Retry-After (config/errors.py), as JSON
under /api/ and as a page elsewhere; any other error is a 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@contextmanager
def database_down() -> Iterator[list[str]]:
    """Every statement fails as it does while the server restarts."""
    seen: list[str] = []

    def refuse(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    with connection.execute_wrapper(refuse):
        yield seen


@pytest.fixture
def client() -> Client:
    user = UserFactory()
    signed_in = Client(raise_request_exception=False)
    signed_in.force_login(user)
    return signed_in


def test_the_api_answers_503_with_retry_after_while_the_database_is_down(client) -> None:
    with database_down() as seen:
        response = client.get("/api/v1/generations")
    assert seen  # the session lookup reached the database and failed there
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "code": "service_unavailable",
        "detail": "The service is briefly unavailable; please retry shortly.",
    }


def test_a_page_answers_503_with_the_styled_page(client) -> None:
    with database_down():
        response = client.get("/gallery/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    html = response.content.decode()
    assert 'data-error-page="503"' in html
    assert "Back in a moment" in html
    assert "Traceback" not in html
    assert "OperationalError" not in html


@pytest.mark.urls("tests.config.failing_urls")
def test_a_database_error_wrapped_by_a_library_is_still_a_503(client) -> None:
    response = client.get("/__test__/database-gone")
    assert response.status_code == 503
    assert 'data-error-page="503"' in response.content.decode()


@pytest.mark.urls("tests.config.failing_urls")
def test_any_other_error_is_a_500_as_json_under_the_api_and_a_page_elsewhere(client) -> None:
    api = client.get("/api/v1/__test__/bug")
    assert api.status_code == 500
    assert api.json() == {
        "code": "internal_error",
        "detail": "An error on our side stopped this request.",
    }
    assert "Retry-After" not in api
    page = client.get("/__test__/bug")
    assert page.status_code == 500
    assert 'data-error-page="500"' in page.content.decode()
    assert "Retry-After" not in page
