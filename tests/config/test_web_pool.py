"""The web process (ASGI) on PostgreSQL lends each request a pooled connection
(DATABASE_POOL, config/settings.py) instead of opening a server backend per request."""

from __future__ import annotations

import pytest
import requests
from django.db import connection

from tests.web_server import running_web_server

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's"),
]


def _other_backends() -> set[int]:
    """Server backends on this test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {pid for (pid,) in cursor.fetchall()}


def _get(url: str, times: int) -> None:
    with requests.Session() as session:
        for _ in range(times):
            response = session.get(f"{url}/healthz", timeout=10)
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}


def test_requests_reuse_the_web_process_pooled_connections() -> None:
    before = _other_backends()
    with running_web_server() as server:
        _get(server.url, 5)
        first = _other_backends() - before
        _get(server.url, 20)
        later = _other_backends() - before
    assert 1 <= len(first) <= 8  # the pool's connections stay open between requests
    assert later == first  # and the next twenty requests opened no new backend


def test_without_the_pool_each_request_closes_its_connection() -> None:
    before = _other_backends()
    with running_web_server(env={"DATABASE_POOL": "false"}) as server:
        _get(server.url, 5)
        after = _other_backends() - before
    assert after == set()
