"""The machine token: shared-cache caching, the fetch lock, 401 flush-and-retry-once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from integrations.pymthouse import (
    MACHINE_TOKEN_SCOPES,
    MachineToken,
    PymthouseAuthError,
    PymthouseClient,
    SecretToken,
)
from integrations.pymthouse.tokens import cache_ttl
from tests.integrations.conftest import TOKEN_PATH, app_path, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

USERS = app_path("/users")


def _token_body(**fields: Any) -> dict[str, Any]:
    return {"access_token": "eyJhbGciOiJSUzI1NiJ9." + "m" * 48, "token_type": "Bearer", **fields}


def test_machine_token_is_fetched_once_and_shared_through_the_cache(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    before = time.time()
    token = client.machine_token()

    assert token.scope == MACHINE_TOKEN_SCOPES == ("users:read", "users:write", "users:token")
    assert (token.token_type, token.expires_in) == ("Bearer", 3600)
    assert before + 3600 <= token.expires_at <= time.time() + 3600
    assert client.machine_token() == token
    assert PymthouseClient.from_settings().machine_token() == token  # another "process"
    (record,) = calls(sandbox, "POST", TOKEN_PATH)
    assert (record["auth"], record["clientId"], record["status"]) == (
        "basic",
        django_settings.PYMTHOUSE_M2M_CLIENT_ID,
        200,
    )


def test_response_without_expires_in_gets_the_short_default_ttl(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("POST", TOKEN_PATH, status=200, body=_token_body(scope="users:read"), times=1)

    token = client.machine_token()

    assert token.expires_in is None
    assert time.time() + 55 < token.expires_at <= time.time() + 60
    assert token.scope == ("users:read",)
    assert client.machine_token() == token
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1


def test_token_expiring_within_the_skew_is_not_served_from_the_cache(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("POST", TOKEN_PATH, status=200, body=_token_body(expires_in=1), times=1)

    short_lived = client.machine_token()
    fresh = client.machine_token()

    assert short_lived.expires_in == 1
    assert fresh.expires_in == 3600
    assert fresh != short_lived
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 2


def test_cache_ttl_subtracts_the_skew() -> None:
    def token(expires_in: int | None, expires_at: float) -> MachineToken:
        return MachineToken(
            access_token=SecretToken("x" * 32),
            token_type="Bearer",
            scope=(),
            expires_in=expires_in,
            expires_at=expires_at,
        )

    now = 1_000_000.0
    assert cache_ttl(token(3600, now + 3600), skew_seconds=60, now=now) == 3540
    assert cache_ttl(token(3600, now + 100), skew_seconds=60, now=now) == 40
    assert cache_ttl(token(3600, now + 30), skew_seconds=60, now=now) == 0
    # A lifetime shorter than twice the skew keeps half of it.
    assert cache_ttl(token(90, now + 90), skew_seconds=60, now=now) == 45
    # No expires_in: the default lifetime, no skew (we cannot know better).
    assert cache_ttl(token(None, now + 60), skew_seconds=60, now=now) == 60


def test_skew_setting_is_applied(sandbox: SandboxControl, settings: Any) -> None:
    settings.PYMTHOUSE_TOKEN_EXPIRY_SKEW_SECONDS = 10
    sandbox.add_fault("POST", TOKEN_PATH, status=200, body=_token_body(expires_in=25), times=1)
    client = PymthouseClient.from_settings()

    first = client.machine_token()

    assert client.machine_token() == first  # 25 - 10 = 15 s in the cache
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1


def test_bad_credentials_fail_once_and_cache_nothing(
    sandbox: SandboxControl, settings: Any
) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "1" * 64
    client = PymthouseClient.from_settings()

    for _ in range(2):
        with pytest.raises(PymthouseAuthError) as excinfo:
            client.machine_token()
        assert (excinfo.value.status, excinfo.value.code) == (401, "invalid_client")
        assert excinfo.value.description == "client authentication failed"

    assert [r["status"] for r in calls(sandbox, "POST", TOKEN_PATH)] == [401, 401]


# --- verify_credentials and the 401 flush -----------------------------------------------


def test_verify_credentials_checks_both_auth_paths(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="u-1")
    client.upsert_user(external_user_id="u-2")

    check = client.verify_credentials()

    assert check.machine_token_scope == MACHINE_TOKEN_SCOPES
    assert check.user_count == 2
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1
    (listing,) = calls(sandbox, "GET", USERS)
    assert listing["auth"] == "basic"  # Builder routes never get the machine token


def test_upstream_401_flushes_the_token_and_retries_exactly_once(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", USERS, status=401, body={"error": "Unauthorized"})

    with pytest.raises(PymthouseAuthError) as excinfo:
        client.verify_credentials()

    assert excinfo.value.status == 401
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 2
    assert len(calls(sandbox, "GET", USERS)) == 2
    # The second (fresh) token stays cached: nothing else is fetched afterwards.
    client.machine_token()
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 2


def test_single_401_recovers_with_a_fresh_token(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    stale = client.machine_token()
    sandbox.add_fault("GET", USERS, status=401, body={"error": "Unauthorized"}, times=1)

    check = client.verify_credentials()

    assert check.user_count == 0
    assert client.machine_token() != stale
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 2
    assert [r["status"] for r in calls(sandbox, "GET", USERS)] == [401, 200]


def test_403_is_not_retried_and_keeps_the_token(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", USERS, status=403, body={"error": "forbidden"})

    with pytest.raises(PymthouseAuthError) as excinfo:
        client.verify_credentials()

    assert (excinfo.value.status, excinfo.value.code) == (403, "forbidden")
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1
    assert len(calls(sandbox, "GET", USERS)) == 1


def test_flush_keeps_a_token_another_process_already_replaced(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    stale = client.machine_token()
    key = client._machine_tokens.key
    replacement = dict(cache.get(key), access_token="eyJ" + "r" * 60)
    cache.set(key, replacement, 300)

    client._machine_tokens.invalidate(stale)

    assert cache.get(key) == replacement


# --- the fetch lock ---------------------------------------------------------------------


@pytest.fixture
def fast_lock_client(sandbox: SandboxControl, settings: Any) -> PymthouseClient:
    settings.PYMTHOUSE_CONNECT_TIMEOUT = 0.5
    settings.PYMTHOUSE_READ_TIMEOUT = 0.5  # lock (and wait) = connect + read + 1 = 2 s
    return PymthouseClient.from_settings()


@pytest.mark.django_db(transaction=True)  # a second thread writes to the database cache
def test_waiter_uses_the_token_the_lock_holder_stores(
    fast_lock_client: PymthouseClient, sandbox: SandboxControl
) -> None:
    holder = PymthouseClient.from_settings()
    tokens = fast_lock_client._machine_tokens
    assert cache.add(tokens.lock_key, "another-process", timeout=30)

    def other_process_finishes() -> None:
        time.sleep(0.5)
        tokens._fetch_and_store()  # what the lock holder does (through its own client)

    thread = threading.Thread(target=other_process_finishes)
    started = time.monotonic()
    thread.start()
    token = fast_lock_client.machine_token()
    thread.join()

    assert 0.4 < time.monotonic() - started < 2.0
    assert token == holder.machine_token()
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1


def test_waiter_fetches_itself_after_a_bounded_wait(
    fast_lock_client: PymthouseClient, sandbox: SandboxControl
) -> None:
    assert cache.add(fast_lock_client._machine_tokens.lock_key, "stuck-process", timeout=30)

    started = time.monotonic()
    token = fast_lock_client.machine_token()

    assert 1.9 < time.monotonic() - started < 4.0
    assert token.expires_in == 3600
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from django.conf import settings
    settings.DATABASES["default"]["NAME"] = os.environ["PYMTHOUSE_TEST_DB_NAME"]
    import django
    django.setup()
    from integrations.pymthouse import get_client
    client = get_client()
    client.discovery()
    time.sleep(max(0.0, float(os.environ["PYMTHOUSE_TEST_START_AT"]) - time.time()))
    token = client.machine_token()
    sys.stdout.write(token.access_token.reveal()[-12:])
    """
)


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_one_fetch(sandbox: SandboxControl) -> None:
    # Slow token endpoint, so the second process arrives while the first holds the lock.
    sandbox.add_fault("POST", TOKEN_PATH, delay=1.0)
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYMTHOUSE_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PYMTHOUSE_TEST_START_AT": str(time.time() + 4),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env=environment,
            cwd=django_settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60) for child in children]

    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr.decode()
    token_suffixes = {stdout.decode() for stdout, _ in outputs}
    assert len(token_suffixes) == 1  # both processes hold the same token
    assert len(calls(sandbox, "POST", TOKEN_PATH)) == 1
