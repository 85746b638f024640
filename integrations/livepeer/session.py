"""The one ``requests.Session`` that talks to signers, runners and AI gateways.

Invariants (house style R8, adapted for money-moving calls):

* every request gets the default ``(connect, read)`` timeout unless the caller passes one;
* redirects are never followed by requests (a redirect would re-send ``Authorization``
  or payment headers to wherever ``Location`` points); image downloads follow a few
  http(s) redirects by hand, without credentials;
* cookies are never stored;
* **no urllib3 retries at all**, not even for GET or connect errors: every repeat of a
  request here is a decision about money, made explicitly by the backend code.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests  # noqa: TID251 -- integrations.livepeer is the one Livepeer HTTP client
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from integrations.http import MAX_ERROR_BODY_BYTES, NO_RETRIES, OutgoingSession
from integrations.livepeer.errors import LivepeerProtocolError

logger = logging.getLogger(__name__)

USER_AGENT = "pixelhouse/0.1 (+livepeer client)"
CHUNK_BYTES = 64 * 1024


class LivepeerSession(OutgoingSession):
    """Session with default timeouts, a user agent, no redirects, no cookies, no retries."""

    def __init__(self, *, default_timeout: tuple[float, float], pool_maxsize: int = 4) -> None:
        super().__init__(
            default_timeout=default_timeout,
            user_agent=USER_AGENT,
            retry=NO_RETRIES,
            pool_maxsize=pool_maxsize,
        )
        # Proxies/netrc from the environment could re-route or add credentials.
        self.trust_env = False


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
