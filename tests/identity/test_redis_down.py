"""With Redis down, sign-in and bearer API calls degrade instead of answering 500.

A redis-server of the test's own on a free loopback port is the cache; the test stops
it (SHUTDOWN NOSAVE) and then signs in with a password, signs in through SSO, and calls
the API with a bearer token. Before, each answered 500 (the cache was on the path).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth import SESSION_KEY
from django.test import Client, override_settings

from accounts.models import User
from accounts.services import user_create
from integrations.oidc import local_copies_clear
from tests.identity import sso
from tests.sandbox_server import free_port

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

ADA = "ada@sandbox.pymthouse.test"
PASSWORD = "pw-redis-down-4821-x"


@pytest.fixture
def dead_redis_cache() -> Iterator[redis.Redis]:
    """The default cache on a Redis of our own, which the test then stops."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    caches = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "KEY_PREFIX": "redis-down-test",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
    local_copies_clear()
    with override_settings(CACHES=caches):
        yield client
    local_copies_clear()
    server.kill()
    server.wait()


def _stop(client: redis.Redis) -> None:
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it stops
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_password_sign_in_works_with_redis_down(dead_redis_cache: redis.Redis) -> None:
    user_create(email="a@example.com", password=PASSWORD, email_verified=True)
    _stop(dead_redis_cache)
    client = Client()
    response = client.post("/accounts/login/", {"login": "a@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert int(client.session[SESSION_KEY]) == User.objects.get(email="a@example.com").pk


def test_sso_sign_in_works_with_redis_down(dead_redis_cache: redis.Redis, sandbox) -> None:
    _stop(dead_redis_cache)
    client = Client()
    response = sso.finish(client, sso.authorize(client, email=ADA))
    assert response.status_code == 302
    assert int(client.session[SESSION_KEY]) == User.objects.get(email=ADA).pk


def test_bearer_calls_work_with_redis_down_and_keep_a_local_jwks(
    dead_redis_cache: redis.Redis, sandbox
) -> None:
    client = Client()
    sso.finish(client, sso.authorize(client, email=ADA))
    sub = next(i["sub"] for i in sandbox.oidc_identities() if i["email"] == ADA)
    token = sandbox.oidc_access_token(sub)
    _stop(dead_redis_cache)
    sandbox.clear_requests()
    for _ in range(3):
        response = Client().get("/api/v1/generations", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200
        assert response.json()["count"] == 0
    # The JWKS came from this process's copy, not one fetch per call.
    assert len(sandbox.requests("/api/v1/oidc/jwks")) <= 1
