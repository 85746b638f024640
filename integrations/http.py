"""HTTP plumbing shared by the integration clients (house style R8).

Only what is logic-identical between ``integrations.pymthouse`` and
``integrations.livepeer`` lives here: the outgoing session's invariants, ``Retry-After``
parsing and small error-message helpers. Each package keeps its own error tree, its own
retry policy and its own envelope parsing.

:class:`OutgoingSession` invariants:

* every request gets the default ``(connect, read)`` timeout unless the caller passes one;
* redirects are never followed (a redirect would re-send ``Authorization`` or payment
  headers to wherever ``Location`` points); a caller cannot opt back in;
* cookies are never stored (server-to-server clients, no session state);
* urllib3 retries exactly as the given ``Retry`` says, and not at all without one;
* keep-alive: connections are pooled per ``(scheme, host, port)`` for the session's life,
  but one idle for more than :data:`MAX_IDLE_SECONDS` is closed instead of reused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

#: The HTTP library's base error, for code outside integrations/ that catches what a
#: library built on it raises (mozilla-django-oidc's token checks: accounts.api_auth).
RequestException = requests.RequestException

_DELTA_SECONDS = re.compile(r"[0-9]{1,10}", re.ASCII)

#: Largest prefix of an error response body that is ever parsed.
MAX_ERROR_BODY_BYTES = 64 * 1024

#: No urllib3 retries at all, for any method or reason; redirects are returned as is.
NO_RETRIES = Retry(
    total=0,
    connect=0,
    read=False,
    redirect=0,
    status=0,
    other=0,
    raise_on_redirect=False,
    raise_on_status=False,
)


#: A pooled connection idle longer than this is closed instead of reused (the next request
#: opens a new one, through the address check where there is one). Below the shortest
#: common server idle timeout (uvicorn's 5 s), so that a request is not sent on a
#: connection the server is closing at that moment: such a request fails after it went
#: out (POST is never retried; a paid call would be outcome-unknown).
MAX_IDLE_SECONDS = 4.0
_IDLE_SINCE = "_pixelhouse_idle_since"


def _close_if_idle(conn: Any) -> None:
    since = getattr(conn, _IDLE_SINCE, None)
    if since is not None and time.monotonic() - since > MAX_IDLE_SECONDS:
        conn.close()  # urllib3 reconnects a closed connection (``_new_conn`` runs again)


class IdleLimitedHTTPConnectionPool(HTTPConnectionPool):
    """urllib3's pool, minus reuse of a connection idle past :data:`MAX_IDLE_SECONDS`."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _close_if_idle(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            setattr(conn, _IDLE_SINCE, time.monotonic())
        super()._put_conn(conn)


class IdleLimitedHTTPSConnectionPool(IdleLimitedHTTPConnectionPool, HTTPSConnectionPool):
    """The HTTPS twin of :class:`IdleLimitedHTTPConnectionPool` (its scheme and connection
    class come from ``HTTPSConnectionPool``, next in the method resolution order)."""


IDLE_LIMITED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": IdleLimitedHTTPConnectionPool,
    "https": IdleLimitedHTTPSConnectionPool,
}


class OutgoingSession(requests.Session):
    """Session with default timeouts, a user agent, no redirects and no cookies."""

    def __init__(
        self,
        *,
        default_timeout: tuple[float, float],
        user_agent: str,
        retry: Retry | None = None,
        pool_maxsize: int = 10,
    ) -> None:
        super().__init__()
        self.default_timeout: tuple[float, float] = default_timeout
        self.headers["User-Agent"] = user_agent
        self.headers["Accept"] = "application/json"
        # Never keep cookies: no request may depend on state left by an earlier one.
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = HTTPAdapter(
            max_retries=NO_RETRIES if retry is None else retry, pool_maxsize=pool_maxsize
        )
        adapter.poolmanager.pool_classes_by_scheme = dict(IDLE_LIMITED_POOLS)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        *args: Any,
        **kwargs: Any,
    ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        # Forced, not defaulted: a caller cannot opt back into following redirects.
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    Returns ``None`` for a missing or unparseable header, and never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT; parsedate returns naive for "-0000".
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(tz=UTC)).total_seconds())


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, newlines) made a space."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def error_repr(error: BaseException, message: str, fields: Mapping[str, object]) -> str:
    """``ClassName('message', key=value, …)``, leaving out the fields that are ``None``."""
    shown = ", ".join(f"{key}={value!r}" for key, value in fields.items() if value is not None)
    return f"{type(error).__name__}({message!r}{', ' if shown else ''}{shown})"
