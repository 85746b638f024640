"""DNS rebinding: the address that was checked is the one connected to.

The resolver is the test's (``addresses.system_getaddrinfo`` is replaced by a
fixture that answers what the test says, in order); the sockets, HTTP and the
loopback listener are real. Before the pin, the check resolved ``localhost`` through
our resolver (a public address) and urllib3 resolved it again through the system
(127.0.0.1) and POSTed the prompt to the listener.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from integrations.livepeer import addresses
from integrations.livepeer.addresses import check_url
from integrations.livepeer.session import AddressPolicy, LivepeerSession, was_not_sent

PUBLIC = "93.184.216.34"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append({"host": self.headers["Host"], "body": self.rfile.read(length).decode()})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A loopback HTTP listener that records every request it receives."""
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answers for our resolver, one per lookup, in order (the last one repeats)."""
    answers: list[str] = []
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        lookups.append(host)
        address = answers[min(len(lookups), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(addresses, "system_getaddrinfo", resolve)
    return answers


def _post(url: str, policy: AddressPolicy) -> requests.Response:
    with LivepeerSession(default_timeout=(2.0, 5.0), address_policy=policy) as http:
        return http.post(url, data="a secret prompt")


def test_a_name_that_rebinds_to_loopback_after_the_check_gets_nothing(
    listener: tuple[int, list[dict[str, str]]], dns: list[str]
) -> None:
    port, seen = listener
    url = f"http://localhost:{port}/"
    dns.extend([PUBLIC, "127.0.0.1"])
    check_url(url, allow_private=False, what="runner", request_id="r")  # passes: public
    with pytest.raises(requests.ConnectionError) as refused:
        _post(url, AddressPolicy(allow_private=False))
    assert was_not_sent(refused.value)
    assert "non-public address 127.0.0.1" in str(refused.value)
    assert seen == []


def test_the_checked_address_is_connected_to_with_the_name_as_host(
    listener: tuple[int, list[dict[str, str]]], dns: list[str]
) -> None:
    """Allowed (the sandbox's setting): the connection goes to the address our resolver
    gave, and ``Host`` stays the name."""
    port, seen = listener
    dns.append("127.0.0.1")
    response = _post(f"http://pinned.runner.test:{port}/", AddressPolicy(allow_private=True))
    assert (response.status_code, response.text) == (200, "ok")
    assert seen == [{"host": f"pinned.runner.test:{port}", "body": "a secret prompt"}]


def test_the_metadata_address_is_refused_even_when_private_ones_are_allowed(
    listener: tuple[int, list[dict[str, str]]], dns: list[str]
) -> None:
    port, seen = listener
    dns.append("169.254.169.254")
    with pytest.raises(requests.ConnectionError) as refused:
        _post(f"http://meta.runner.test:{port}/", AddressPolicy(allow_private=True))
    assert "cloud metadata address" in str(refused.value)
    assert seen == []


def test_trusted_hosts_from_our_configuration_are_not_checked(
    listener: tuple[int, list[dict[str, str]]], dns: list[str]
) -> None:
    """The signer's host (our configuration) on loopback works with private addresses off."""
    port, seen = listener
    dns.append(PUBLIC)  # never asked: a trusted host is resolved by the system
    response = _post(
        f"http://127.0.0.1:{port}/",
        AddressPolicy(allow_private=False, trusted_hosts=frozenset({"127.0.0.1"})),
    )
    assert response.status_code == 200
    assert [request["body"] for request in seen] == ["a secret prompt"]
