"""Keep-alive upstream connections, counted by the sandbox (issue 16 item 5).

The sandbox's request log records each request's ``peer`` (the caller's address and
port), so the number of distinct peers is the number of TCP connections the client
opened. Everything is real: sockets, HTTP, the sandbox. Only our resolver seam
(``addresses.system_getaddrinfo``) answers for made-up host names, as in
``test_address_pinning.py``, so that two names can reach the one sandbox and every
lookup (one per new connection) is counted.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from integrations.http import MAX_IDLE_SECONDS
from integrations.livepeer import SignerCredentials, addresses
from integrations.livepeer.session import (
    AddressPolicy,
    forget_sessions,
    shared_session,
    was_not_sent,
)
from integrations.pymthouse import PymthouseClient, get_client
from tests.integrations.livepeer.conftest import (
    DISCOVERY_PATH,
    MODEL,
    PAYMENT_PATH,
    RecordingGuard,
    calls,
    generate,
    generate_error,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/health"
TIMEOUT = (2.0, 5.0)
ALLOWED = AddressPolicy(allow_private=True)
TOKEN_PATH = "/api/v1/oidc/token"


@pytest.fixture(autouse=True)
def _no_connection_yet() -> Iterator[None]:
    """Every test starts with no Livepeer session in this process (so none is pooled)."""
    forget_sessions()
    yield
    forget_sessions()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Our resolver answers ``answer`` (127.0.0.1 unless changed) and records each name."""
    state: dict[str, Any] = {"answer": "127.0.0.1", "names": []}

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        state["names"].append(host)
        address = (state["answer"], port)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]

    monkeypatch.setattr(addresses, "system_getaddrinfo", resolve)
    return state


def peers(records: list[dict[str, Any]]) -> list[str]:
    """The distinct TCP connections of ``records``, in order of first use."""
    return list(dict.fromkeys(str(record["peer"]) for record in records))


def livepeer_records(sandbox: SandboxControl) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith(("/signer/", "/apps/"))]


def name_url(sandbox: SandboxControl, name: str, path: str = HEALTH) -> str:
    port = sandbox.url.rsplit(":", 1)[1]
    return f"http://{name}:{port}{path}"


# --- one connection per upstream host, not one per generation ---------------------------


def test_n_generations_open_one_connection_to_the_signer_and_runner_host(
    sandbox: SandboxControl, signer_credentials: SignerCredentials
) -> None:
    """Signer and runners are one host:port in the sandbox: 4 generations, 1 connection."""
    for _ in range(4):
        generate(signer_credentials, RecordingGuard())

    records = livepeer_records(sandbox)
    assert len(calls(sandbox, PAYMENT_PATH)) == 4
    assert len(calls(sandbox, DISCOVERY_PATH, "GET")) == 4  # the cache is off in tests
    assert len(records) >= 4 * 4  # discover, challenge, payment, paid call each time
    assert {record["status"] for record in records} == {200, 402}  # 402: the challenge
    assert len(peers(records)) == 1


def test_a_generation_uses_one_connection_per_host_and_never_shares_one(
    sandbox: SandboxControl, signer_credentials: SignerCredentials
) -> None:
    """The signer named ``localhost`` and runners on ``127.0.0.1`` (one server): two hosts
    for the client, two connections, each used only for its own host."""
    local = sandbox.url.replace("127.0.0.1", "localhost")
    credentials = SignerCredentials(
        signer_url=signer_credentials.signer_url.replace(sandbox.url, local),
        discovery_url=signer_credentials.discovery_url.replace(sandbox.url, local),
        access_token=signer_credentials.access_token,
    )
    for _ in range(3):
        generate(credentials, RecordingGuard())

    records = livepeer_records(sandbox)
    port = sandbox.url.rsplit(":", 1)[1]
    signer = [r for r in records if r["host"] == f"localhost:{port}"]
    runner = [r for r in records if r["host"] == f"127.0.0.1:{port}"]
    assert len(signer) + len(runner) == len(records)
    assert {r["path"] for r in signer} >= {DISCOVERY_PATH, PAYMENT_PATH}
    assert {r["path"].split("/")[1] for r in runner} == {"apps"}
    assert len(peers(signer)) == 1
    assert len(peers(runner)) == 1
    assert set(peers(signer)).isdisjoint(peers(runner))


def test_pymthouse_mints_reuse_one_connection_and_skip_the_shared_cache(
    sandbox: SandboxControl, django_assert_num_queries: Any
) -> None:
    """N signer-session mints through ``get_client()``: one TCP connection, one discovery
    fetch, and after the first no cache read at all (no SQL with the database cache)."""
    client = get_client()
    client.mint_signer_session(external_user_id="conn-user-0")
    with django_assert_num_queries(0):
        for index in range(1, 5):
            client.mint_signer_session(external_user_id=f"conn-user-{index}")

    records = [r for r in sandbox.requests() if r["path"].startswith("/api/v1/oidc/")]
    assert [r["path"] for r in records] == [
        "/api/v1/oidc/.well-known/openid-configuration",
        *[TOKEN_PATH] * 5,
    ]
    assert len(peers(records)) == 1
    assert get_client() is client


# --- the address check runs for every new connection, and only then ----------------------


def test_one_lookup_per_new_connection_and_another_host_gets_its_own(
    sandbox: SandboxControl, lookups: dict[str, Any]
) -> None:
    http = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
    assert shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED) is http
    for name in ("a.sandbox.test", "a.sandbox.test", "b.sandbox.test", "a.sandbox.test"):
        response = http.get(name_url(sandbox, name))
        assert response.status_code == 200

    records = sandbox.requests(HEALTH)
    assert [r["host"].split(":")[0] for r in records] == [
        "a.sandbox.test",
        "a.sandbox.test",
        "b.sandbox.test",
        "a.sandbox.test",
    ]
    first, _, other, again = (r["peer"] for r in records)
    assert peers(records) == [first, other]
    assert again == first
    assert lookups["names"] == ["a.sandbox.test", "b.sandbox.test"]


def test_a_new_connection_is_checked_again_and_a_dropped_request_is_not_retried(
    sandbox: SandboxControl, lookups: dict[str, Any]
) -> None:
    """The name rebinds to the metadata address after the first connection: the pooled
    connection stays on the checked address; once the server drops it, the request that
    saw the drop is not repeated, and the new connection is refused before a byte."""
    http = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
    url = name_url(sandbox, "rebind.sandbox.test")
    assert http.get(url).status_code == 200
    lookups["answer"] = "169.254.169.254"
    assert http.get(url).status_code == 200  # reused: no lookup, still the checked address
    assert lookups["names"] == ["rebind.sandbox.test"]

    sandbox.add_fault("GET", HEALTH, drop=True, times=1)
    with pytest.raises(requests.ConnectionError) as dropped:
        http.get(url)
    assert not was_not_sent(dropped.value)  # it went out: counts as sent
    with pytest.raises(requests.ConnectionError) as refused:
        http.get(url)
    assert was_not_sent(refused.value)
    assert "cloud metadata address" in str(refused.value)

    records = sandbox.requests(HEALTH)
    assert [r["status"] for r in records] == [200, 200, None]  # no retry, nothing after
    assert [r["dropped"] for r in records] == [False, False, True]
    assert len(peers(records)) == 1
    assert lookups["names"] == ["rebind.sandbox.test", "rebind.sandbox.test"]


def test_a_redirect_on_a_pooled_connection_is_still_not_followed(
    sandbox: SandboxControl, lookups: dict[str, Any]
) -> None:
    http = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
    assert http.get(name_url(sandbox, "r.sandbox.test")).status_code == 200
    sandbox.add_fault(
        "GET", HEALTH, status=302, headers={"Location": "/api/v1/redirected"}, times=1
    )
    response = http.get(name_url(sandbox, "r.sandbox.test"), allow_redirects=True)
    assert (response.status_code, response.headers["Location"]) == (302, "/api/v1/redirected")
    assert http.get(name_url(sandbox, "r.sandbox.test")).status_code == 200

    records = sandbox.requests()
    assert [(r["path"], r["status"]) for r in records] == [
        (HEALTH, 200),
        (HEALTH, 302),
        (HEALTH, 200),
    ]
    assert len(peers(records)) == 1


def test_a_connection_idle_past_the_limit_is_replaced_before_the_server_closes_it(
    sandbox: SandboxControl, lookups: dict[str, Any]
) -> None:
    """Idle for MAX_IDLE_SECONDS (4) and a bit, still under uvicorn's 5 s: the client
    closes it itself and opens (and checks) a new connection; within the limit it reuses."""
    http = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
    url = name_url(sandbox, "idle.sandbox.test")
    assert http.get(url).status_code == 200
    time.sleep(1.0)
    assert http.get(url).status_code == 200  # reused
    time.sleep(MAX_IDLE_SECONDS + 0.3)
    assert http.get(url).status_code == 200  # replaced, no error

    records = sandbox.requests(HEALTH)
    assert [r["status"] for r in records] == [200, 200, 200]
    first, reused, replaced = (r["peer"] for r in records)
    assert reused == first
    assert replaced != first
    assert lookups["names"] == ["idle.sandbox.test", "idle.sandbox.test"]


# --- a forked child never uses its parent's connections -----------------------------------


def _in_child(check: Any) -> int:
    """Run ``check()`` in a forked child; its exit status (0: it returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_opens_its_own_connections(
    sandbox: SandboxControl, lookups: dict[str, Any]
) -> None:
    http = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
    pymthouse = get_client()
    url = name_url(sandbox, "fork.sandbox.test")
    assert http.get(url).status_code == 200

    def child() -> bool:
        own = shared_session(default_timeout=TIMEOUT, address_policy=ALLOWED)
        return own is not http and get_client() is not pymthouse and own.get(url).status_code == 200

    assert _in_child(child) == 0
    assert http.get(url).status_code == 200  # the parent's connection is untouched

    parent_first, child_peer, parent_again = (r["peer"] for r in sandbox.requests(HEALTH))
    assert parent_again == parent_first
    assert child_peer != parent_first
    assert isinstance(pymthouse, PymthouseClient)


# --- the signer's discovery answer, cached briefly per URL --------------------------------


def test_discovery_is_reused_for_its_ttl_across_users_and_keyed_by_url(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    client: PymthouseClient,
    settings: Any,
) -> None:
    settings.LIVEPEER_DISCOVERY_CACHE_SECONDS = 0.5
    other = SignerCredentials.from_signer_session(
        client.mint_signer_session(external_user_id="conn-other-user")
    )
    assert other.discovery_url == signer_credentials.discovery_url
    sandbox.clear_requests()

    generate(signer_credentials, RecordingGuard())
    generate(other, RecordingGuard())  # another user, same URL, within the TTL
    assert len(calls(sandbox, DISCOVERY_PATH, "GET")) == 1

    with_query = SignerCredentials(
        signer_url=other.signer_url,
        discovery_url=f"{other.discovery_url}?caps=image-generation/{MODEL}",
        access_token=other.access_token,
    )
    generate(with_query, RecordingGuard())  # another URL: its own entry
    assert [r["query"] for r in calls(sandbox, DISCOVERY_PATH, "GET")] == [
        "",
        f"caps=image-generation/{MODEL}",
    ]

    time.sleep(0.6)
    generate(signer_credentials, RecordingGuard())  # expired: fetched again
    assert len(calls(sandbox, DISCOVERY_PATH, "GET")) == 3
    assert len(calls(sandbox, PAYMENT_PATH)) == 4


def test_a_failed_discovery_is_not_cached(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, settings: Any
) -> None:
    settings.LIVEPEER_DISCOVERY_CACHE_SECONDS = 60
    sandbox.add_fault("GET", DISCOVERY_PATH, status=503, times=1)
    generate_error(signer_credentials, RecordingGuard(), Exception)
    generate(signer_credentials, RecordingGuard())
    generate(signer_credentials, RecordingGuard())

    assert [r["status"] for r in calls(sandbox, DISCOVERY_PATH, "GET")] == [503, 200]
    assert len(calls(sandbox, PAYMENT_PATH)) == 2
