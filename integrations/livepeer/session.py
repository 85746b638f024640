"""The one ``requests.Session`` that talks to signers, runners and AI gateways.

Invariants (house style R8, adapted for money-moving calls):

* every request gets the default ``(connect, read)`` timeout unless the caller passes one;
* redirects are never followed by requests (a redirect would re-send ``Authorization``
  or payment headers to wherever ``Location`` points); image downloads follow a few
  http(s) redirects by hand, without credentials;
* cookies are never stored;
* **no urllib3 retries at all**, not even for GET or connect errors: every repeat of a
  request here is a decision about money, made explicitly by the backend code;
* credentials and payment headers travel per request (``headers=``), never on the session.

**One keep-alive session per process** (:func:`shared_session`), per timeout and
:class:`AddressPolicy`: urllib3 keeps one connection pool per ``(scheme, host, port)``
inside it, so N generations against one signer open one TCP connection to it, not N, and
a pooled connection is never used for another host or port. The address check runs in
``_new_conn``, i.e. for every new connection and only then (a reused socket stays on the
address that was checked when it was opened). A forked child (Celery prefork) forgets
its parent's sessions (``os.register_at_fork``), so it never writes to a parent's socket.
A body that is not read to its end closes its connection instead of returning it, and a
connection idle for more than ``MAX_IDLE_SECONDS`` (``integrations/http.py``) is closed
rather than reused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from integrations.http import (
    MAX_ERROR_BODY_BYTES,
    NO_RETRIES,
    IdleLimitedHTTPConnectionPool,
    IdleLimitedHTTPSConnectionPool,
    OutgoingSession,
)
from integrations.livepeer.addresses import AddressRefusedError, connect_addresses
from integrations.livepeer.errors import LivepeerProtocolError

logger = logging.getLogger(__name__)

USER_AGENT = "pixelhouse/0.1 (+livepeer client)"
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class AddressPolicy:
    """Which hosts a session connects to through the address check (``addresses.py``).

    Every host except ``trusted_hosts`` (the signer's and the gateway's, from our own
    configuration) comes from upstream data: it is resolved once per new connection,
    each address checked, and the socket opened to a checked address only.
    """

    allow_private: bool
    trusted_hosts: frozenset[str] = frozenset()


def trusted_hosts(*urls: str) -> frozenset[str]:
    """The host names of URLs from our own configuration (exempt from the address check)."""
    return frozenset(host.lower() for url in urls if (host := urlsplit(url).hostname))


def _pinned_new_conn(conn: HTTPConnection, policy: AddressPolicy, connect: Any) -> Any:
    host = conn.host
    if host.lower() in policy.trusted_hosts:
        return connect()
    try:
        addresses = connect_addresses(host, conn.port or 80, allow_private=policy.allow_private)
    except AddressRefusedError as exc:
        # Nothing is sent: the same class as a refused connection (``was_not_sent``).
        raise NewConnectionError(conn, f"refused to connect: {exc}") from None
    if not addresses:
        raise NewConnectionError(conn, f"host {host[:100]} does not resolve")
    last: NewConnectionError | None = None
    for address in addresses:
        # ``_dns_host`` is what urllib3 connects to; ``host`` (TLS server name, Host
        # header) reads it too, so it is the name again before anything is sent.
        conn._dns_host = str(address)
        try:
            return connect()
        except NewConnectionError as exc:
            last = exc
        finally:
            conn._dns_host = host
    assert last is not None
    raise last


def pinned_pool_classes(policy: AddressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    class PinnedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> Any:
            return _pinned_new_conn(self, policy, super()._new_conn)

    class PinnedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> Any:
            return _pinned_new_conn(self, policy, super()._new_conn)

    class PinnedHTTPConnectionPool(IdleLimitedHTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSConnectionPool(IdleLimitedHTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}


class LivepeerSession(OutgoingSession):
    """Session with default timeouts, a user agent, no redirects, no cookies, no retries.

    With an ``address_policy``, connections to upstream-chosen hosts go only to the
    addresses that were checked for them (no second DNS answer; see ``addresses.py``).
    """

    def __init__(
        self,
        *,
        default_timeout: tuple[float, float],
        pool_maxsize: int = 4,
        address_policy: AddressPolicy | None = None,
    ) -> None:
        super().__init__(
            default_timeout=default_timeout,
            user_agent=USER_AGENT,
            retry=NO_RETRIES,
            pool_maxsize=pool_maxsize,
        )
        # Proxies/netrc from the environment could re-route or add credentials.
        self.trust_env = False
        if address_policy is not None:
            adapter = self.get_adapter("https://")
            assert isinstance(adapter, HTTPAdapter)
            adapter.poolmanager.pool_classes_by_scheme = pinned_pool_classes(address_policy)


#: Sessions kept per process: one per (default timeout, address policy). The policy's
#: trusted hosts come from the signer session's URLs, normally the same for every user;
#: more combinations than this (settings changed in tests) start the map afresh.
MAX_SHARED_SESSIONS = 8

_shared: dict[tuple[tuple[float, float], AddressPolicy], LivepeerSession] = {}
_shared_lock = threading.Lock()


def shared_session(
    *, default_timeout: tuple[float, float], address_policy: AddressPolicy
) -> LivepeerSession:
    """This process's keep-alive session for ``default_timeout`` and ``address_policy``.

    Never close it: it lives as long as the process (or until :func:`forget_sessions`).
    urllib3's pools are thread-safe, cookies are never stored and no credential is kept on
    the session, so threads of one process may share it.
    """
    key = (default_timeout, address_policy)
    with _shared_lock:
        session = _shared.get(key)
        if session is None:
            if len(_shared) >= MAX_SHARED_SESSIONS:
                # Not closed: another thread may still be sending through one of them;
                # its sockets close when the last reference goes.
                _shared.clear()
            session = _shared[key] = LivepeerSession(
                default_timeout=default_timeout, address_policy=address_policy
            )
        return session


def forget_sessions() -> None:
    """Drop this process's sessions without closing them (tests: start from no connection)."""
    with _shared_lock:
        _shared.clear()


def _after_fork_in_child() -> None:
    # The child's copies of the sockets are the parent's connections: never used, never
    # closed here (a close in the child does not affect the parent's, but a TLS close
    # could), just dropped. The lock may have been copied while another thread held it.
    global _shared_lock
    _shared_lock = threading.Lock()
    _shared.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def url_path(url: str) -> str:
    """The path of ``url`` for logs and messages (never the query or the host's userinfo)."""
    return urlsplit(url).path or "/"


def was_not_sent(exc: requests.RequestException) -> bool:
    """True when ``exc`` proves the request never reached the server.

    Only a refused/unresolvable connection or a connect timeout qualifies. A read
    timeout, a reset or a closed connection after the request went out (and anything
    unrecognised) may have reached the server, so it counts as sent.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema)


def is_timeout(exc: requests.RequestException) -> bool:
    """A read timeout, including one raised while streaming the body."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, ReadTimeoutError)


def transport_failure(exc: requests.RequestException) -> str:
    """A short, secret-free description of a transport error for messages."""
    if was_not_sent(exc):
        return "connection failed before the request was sent"
    if is_timeout(exc):
        return "timed out waiting for the response"
    return "connection dropped before a response arrived"


class BodyTooLargeError(LivepeerProtocolError):
    """A 2xx body exceeded its cap; ``status`` is the status that came with it."""

    def __init__(self, *, status: int, limit: int) -> None:
        super().__init__(f"HTTP {status} body exceeds {limit} bytes", status=status)
        self.limit = limit


def read_capped(response: requests.Response, limit: int) -> None:
    """Read a streamed body into ``response.content``, never more than ``limit`` bytes.

    An error body (status >= 300) is silently truncated to the error cap (only its
    message is ever used); a 2xx body over ``limit`` raises :class:`BodyTooLargeError`
    without reading the rest. The connection is closed either way.
    """
    status = response.status_code
    cap = limit if status < 300 else min(limit, MAX_ERROR_BODY_BYTES)
    try:
        declared = response.headers.get("Content-Length", "")
        if status < 300 and declared.isdigit() and int(declared) > cap:
            raise BodyTooLargeError(status=status, limit=cap)
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                if status < 300:
                    raise BodyTooLargeError(status=status, limit=cap)
                # The rest is unread: close the connection rather than pool it.
                response.raw.close()
                break
        response._content = b"".join(chunks)[:cap]
        response._content_consumed = True  # type: ignore[attr-defined]
    finally:
        response.close()


def send(
    http: LivepeerSession,
    method: str,
    url: str,
    *,
    step: str,
    request_id: str,
    max_body: int | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Send one request, logging step, request id, path, status and elapsed ms.

    With ``max_body`` the body is streamed and capped (:func:`read_capped`); without
    it the caller must pass ``stream=True`` and read the body itself under a cap.
    Transport errors (also while reading the body) are logged and re-raised unchanged
    for the caller to classify. Headers and bodies are never logged.
    """
    if max_body is None and not kwargs.get("stream"):
        raise ValueError("send() needs max_body or stream=True: every body is capped")
    started = time.monotonic()
    path = url_path(url)
    try:
        response = http.request(method, url, **{**kwargs, "stream": True})
        if max_body is not None:
            read_capped(response, max_body)
    except BodyTooLargeError as exc:
        exc.message = f"livepeer {step} {method} {path}: {exc.message}"
        exc.request_id = request_id
        logger.warning("livepeer %s [%s] %s %s: %s", step, request_id, method, path, exc)
        raise
    except requests.RequestException as exc:
        elapsed_ms = int((time.monotonic() - started) * 1000)
        logger.warning(
            "livepeer %s [%s] %s %s failed after %d ms: %s (%s)",
            step,
            request_id,
            method,
            path,
            elapsed_ms,
            type(exc).__name__,
            transport_failure(exc),
        )
        raise
    elapsed_ms = int((time.monotonic() - started) * 1000)
    level = logging.INFO if response.status_code < 500 else logging.WARNING
    logger.log(
        level,
        "livepeer %s [%s] %s %s -> %d in %d ms",
        step,
        request_id,
        method,
        path,
        response.status_code,
        elapsed_ms,
    )
    return response
