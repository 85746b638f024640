"""The one ``requests.Session`` that talks to pymthouse.

Invariants (house style R8):

* every request gets the default ``(connect, read)`` timeout unless the caller passes one;
* redirects are never followed (a redirect would re-send our ``Authorization`` header to
  wherever ``Location`` points, and usually means ``PYMTHOUSE_URL`` is misconfigured);
* cookies are never stored (server-to-server client, no session state);
* urllib3 retries only idempotent methods (GET/HEAD/PUT/DELETE), only on connection
  errors and 502/503/504, with a small backoff, and honours ``Retry-After`` up to a cap.
  POST is never retried here, not even after a connect error: ``POST /users`` is
  idempotent by contract, but call-level retry of a POST belongs to the Celery task, so
  that the attempt count stays visible in one place.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from integrations.http import OutgoingSession, parse_retry_after

logger = logging.getLogger(__name__)

USER_AGENT = "pixelhouse/0.1 (+pymthouse client)"

#: Methods whose repetition cannot change server state twice (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
#: Gateway errors worth one more try; 500 is a bug, not a blip, and is not retried.
RETRY_STATUSES = frozenset({502, 503, 504})
#: Longest ``Retry-After`` we sleep for inside a request. A longer one is handed to the
#: caller (as ``PymthouseError.retry_after``) instead of blocking a web worker.
MAX_RETRY_AFTER_SECONDS = 5
BACKOFF_FACTOR_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 2.0
BACKOFF_JITTER_SECONDS = 0.1
#: Keep-alive connections kept per host. One client (one session) is shared by threads,
#: e.g. the usage sync's bounded pool (``BILLING_USAGE_SYNC_CONCURRENCY``, capped at
#: this): ``requests`` sends through urllib3's thread-safe connection pool, cookies are
#: never stored and the auth objects are stateless, so sharing it is safe; a pool
#: smaller than the number of threads would open and discard a connection per request.
MAX_CONCURRENT_REQUESTS = 32


class IdempotentRetry(Retry):
    """``Retry`` that never retries a non-idempotent method, for any reason.

    Stock urllib3 retries connect errors for every method and retries 429/413 whenever
    ``Retry-After`` is present; both are turned off here. ``read=False`` makes a read
    timeout surface as ``ReadTimeout`` (not as a ``ConnectionError`` wrapping a
    ``MaxRetryError``), and a read error is never retried: the server may have acted.
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return (
            self._is_method_retryable(method)
            and self.status_forcelist is not None
            and status_code in self.status_forcelist
        )

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if method is None or not self._is_method_retryable(method):
            # No budget at all: the base class raises (or re-raises ``error``) at once.
            exhausted = self.new(total=0, connect=0, read=False, status=0, other=0)
            return Retry.increment(exhausted, method, url, response, error, _pool, _stacktrace)
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after is not None and self._retry_after_too_long(retry_after):
                # ``raise_on_status=False`` makes urlopen return this response as is.
                raise MaxRetryError(_pool, url, ResponseError("Retry-After exceeds cap"))  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)

    @staticmethod
    def _retry_after_too_long(header_value: str) -> bool:
        seconds = parse_retry_after(header_value)
        return seconds is not None and seconds > MAX_RETRY_AFTER_SECONDS


def build_retry(max_retries: int) -> IdempotentRetry:
    return IdempotentRetry(
        total=max_retries,
        connect=max_retries,
        read=False,
        status=max_retries,
        other=0,
        redirect=0,
        allowed_methods=IDEMPOTENT_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=BACKOFF_FACTOR_SECONDS,
        backoff_max=BACKOFF_MAX_SECONDS,
        backoff_jitter=BACKOFF_JITTER_SECONDS,
        respect_retry_after_header=True,
        retry_after_max=MAX_RETRY_AFTER_SECONDS,
        raise_on_status=False,
        raise_on_redirect=False,
    )


class PymthouseSession(OutgoingSession):
    """Session with default timeouts, a user agent, no redirects and idempotent retries."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_retries: int,
        pool_maxsize: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        super().__init__(
            default_timeout=(connect_timeout, read_timeout),
            user_agent=USER_AGENT,
            retry=build_retry(max_retries),
            pool_maxsize=pool_maxsize,
        )
