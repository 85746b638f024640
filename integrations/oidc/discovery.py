"""The one OIDC discovery client: fetch, validate and cache an issuer's metadata.

Used by the relying-party code in this package (browser SSO, bearer tokens) and by the
pymthouse client (its token endpoint). What :func:`discover` checks (OIDC Discovery §3,
§4.3; RFC 8414 §2):

* the document names exactly the configured issuer (mix-up defence); a mismatch is a
  configuration error, never a reason to try another document;
* the endpoints the caller needs are non-empty strings, and the standard fields we read
  have their standard types (``*_endpoint`` strings, ``scopes_supported`` and
  ``grant_types_supported`` lists of strings);
* with ``same_origin=True``, ``token_endpoint`` and ``jwks_uri`` are on the issuer's own
  origin (the pymthouse client sends its client secret to the token endpoint).

``fallback_url`` is for pymthouse (docs/upstream.md §P2): it serves node-oidc-provider's
issuer-relative document (tried first, what the official SDK reads) and a hand-written one
at the origin root. Only a *missing or malformed* first document (a 404 page, not JSON,
required fields absent) moves on to the fallback; an unreachable server, a 5xx or a
timeout does not (it would only cost a second wait on the same origin), and neither does
a document naming another issuer.

Caching (``OIDC_DISCOVERY_CACHE_SECONDS``; 0 turns it off): one entry per issuer in the
shared cache, re-validated on every read, plus this process's own copy of each document
(:func:`cached`), which is what answers while Redis is down (the shared cache then
misses) without a fetch per request. The JWKS cache of this package uses the same two.
In front of the shared cache, a document this process read or stored less than
``OIDC_DISCOVERY_LOCAL_SECONDS`` ago (default 30, capped at the shared lifetime; 0: off)
is answered from memory, so a token mint or a bearer check does not read the shared
cache (a SQL query with the database cache) every time. Staleness: a document replaced
or forgotten by another process is seen here up to that many seconds later; one
forgotten in this process (:func:`forget`, an unknown ``kid``) is refetched at once.

HTTP goes through a ``fetch`` callable that returns a JSON object or raises
:class:`DiscoveryError`; :func:`fetch_json` is the default. Every failure is one neutral
:class:`DiscoveryError`; each caller translates it into its own error type at its
boundary (``OidcError`` here, the pymthouse error tree in the pymthouse client).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache

from integrations.http import OutgoingSession

logger = logging.getLogger(__name__)

WELL_KNOWN_PATH = "/.well-known/openid-configuration"

#: Why discovery failed:
#: ``unavailable``  the server could not be reached, timed out or answered 5xx/429;
#: ``unusable``     the document is missing (a 4xx) or malformed: the only fallback trigger;
#: ``misconfigured`` the URL itself is wrong (invalid, redirected): never a fallback;
#: ``issuer_mismatch``, ``endpoint_origin_mismatch``: the document fails our checks.
Reason = Literal[
    "unavailable", "unusable", "misconfigured", "issuer_mismatch", "endpoint_origin_mismatch"
]

#: Standard string fields that, when present, must be strings (or null).
_OPTIONAL_STRINGS = ("authorization_endpoint", "userinfo_endpoint", "end_session_endpoint")
#: Standard array fields that, when present, must be lists of strings (or null).
_STRING_LISTS = ("scopes_supported", "grant_types_supported")
#: Fields every caller needs (``required`` adds to them).
_ALWAYS_REQUIRED = ("token_endpoint", "jwks_uri")

Fetch = Callable[[str], dict[str, Any]]


class DiscoveryError(Exception):
    """Discovery (or a JWKS fetch) failed; ``reason`` says how, the message says why."""

    def __init__(
        self,
        message: str,
        *,
        reason: Reason,
        url: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        issuer: str | None = None,
        found_issuer: object = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.url = url
        self.status = status
        self.retryable = retryable
        self.issuer = issuer
        self.found_issuer = found_issuer
        self.field = field


# --- HTTP ---------------------------------------------------------------------------------

_session: OutgoingSession | None = None


def _http() -> OutgoingSession:
    global _session
    if _session is None:
        timeout = float(getattr(settings, "SOCIALACCOUNT_REQUESTS_TIMEOUT", 10))
        _session = OutgoingSession(
            default_timeout=(min(timeout, 3.05), timeout), user_agent="pixelhouse-oidc/1"
        )
    return _session


def _forget_session_after_fork() -> None:
    # A forked child opens its own connections; the parent's are never used here.
    global _session
    _session = None


os.register_at_fork(after_in_child=_forget_session_after_fork)


def fetch_json(url: str) -> dict[str, Any]:
    """``GET url`` as a JSON object (no redirects, no retries), or ``DiscoveryError``."""
    try:
        response = _http().get(url)
    except OSError as exc:  # requests' errors are OSErrors
        raise DiscoveryError(
            f"could not reach {url}: {type(exc).__name__}",
            reason="unavailable",
            url=url,
            retryable=True,
        ) from exc
    status = response.status_code
    if status != 200:
        retryable = status >= 500 or status in (408, 429)
        raise DiscoveryError(
            f"{url} answered {status}",
            reason="unavailable" if retryable else "unusable",
            url=url,
            status=status,
            retryable=retryable,
        )
    try:
        document = response.json()
    except ValueError as exc:
        raise DiscoveryError(
            f"{url} did not answer JSON", reason="unusable", url=url, status=status
        ) from exc
    if not isinstance(document, dict):
        raise DiscoveryError(
            f"{url} did not answer a JSON object", reason="unusable", url=url, status=status
        )
    return document


# --- cache --------------------------------------------------------------------------------

#: This process's own copy of each document, ``key → (expires at, document)``: what
#: the shared cache answers when Redis is down (a miss) without a fetch per request.
_local_copies: dict[str, tuple[float, dict[str, Any]]] = {}
#: ``key → (fresh until, document)``: answered without reading the shared cache.
_front: dict[str, tuple[float, dict[str, Any]]] = {}


def _front_seconds() -> float:
    shared = int(settings.OIDC_DISCOVERY_CACHE_SECONDS)
    return float(max(0, min(int(settings.OIDC_DISCOVERY_LOCAL_SECONDS), shared)))


def _keep_in_front(key: str, document: dict[str, Any]) -> None:
    seconds = _front_seconds()
    if seconds > 0:
        _front[key] = (time.monotonic() + seconds, document)


def cache_key(kind: str, url: str) -> str:
    return f"oidc:{kind}:{hashlib.sha256(url.encode()).hexdigest()[:32]}"


def cached(key: str) -> dict[str, Any] | None:
    """A document read here in the last ``OIDC_DISCOVERY_LOCAL_SECONDS``, else the shared
    cache's, else this process's unexpired copy, else ``None``."""
    front = _front.get(key)
    if front is not None and front[0] > time.monotonic():
        return front[1]
    document = cache.get(key)
    if isinstance(document, dict):
        _keep_in_front(key, document)
        return document
    copy = _local_copies.get(key)
    if copy is not None and copy[0] > time.monotonic():
        return copy[1]
    return None


def remember(key: str, document: dict[str, Any]) -> None:
    """Store ``document`` in both caches for ``OIDC_DISCOVERY_CACHE_SECONDS`` (0: not at all)."""
    timeout = int(settings.OIDC_DISCOVERY_CACHE_SECONDS)
    if timeout <= 0:
        return
    cache.set(key, document, timeout=timeout)
    _local_copies[key] = (time.monotonic() + timeout, document)
    _keep_in_front(key, document)


def forget(key: str) -> None:
    cache.delete(key)
    _local_copies.pop(key, None)
    _front.pop(key, None)


def local_copies_clear() -> None:
    """Forget this process's copies (tests; they follow the shared cache's lifetime)."""
    _local_copies.clear()
    _front.clear()


# --- discovery ----------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _check(
    document: dict[str, Any],
    *,
    issuer: str,
    url: str | None,
    required: Sequence[str],
    same_origin: bool,
) -> dict[str, Any]:
    for field in dict.fromkeys((*_ALWAYS_REQUIRED, *required)):
        value = document.get(field)
        if not isinstance(value, str) or not value:
            raise DiscoveryError(
                f"discovery document lacks {field}", reason="unusable", url=url, field=field
            )
    for field in _OPTIONAL_STRINGS:
        if not isinstance(document.get(field), str | None):
            raise DiscoveryError(
                f"discovery document's {field} is not a string",
                reason="unusable",
                url=url,
                field=field,
            )
    for field in _STRING_LISTS:
        value = document.get(field)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(item, str) for item in value)
        ):
            raise DiscoveryError(
                f"discovery document's {field} is not a list of strings",
                reason="unusable",
                url=url,
                field=field,
            )
    found = document.get("issuer")
    if found != issuer:
        raise DiscoveryError(
            f"discovery names issuer {found!r}, configured {issuer!r}",
            reason="issuer_mismatch",
            url=url,
            issuer=issuer,
            found_issuer=found,
        )
    if same_origin:
        issuer_origin = _origin(issuer)
        for field in ("token_endpoint", "jwks_uri"):
            if _origin(document[field]) != issuer_origin:
                raise DiscoveryError(
                    f"discovery {field} is not on the issuer's origin",
                    reason="endpoint_origin_mismatch",
                    url=url,
                    issuer=issuer,
                    field=field,
                )
    return document


def discover(
    issuer: str,
    *,
    fetch: Fetch = fetch_json,
    fallback_url: str | None = None,
    required: Sequence[str] = (),
    same_origin: bool = False,
) -> dict[str, Any]:
    """The issuer's discovery document, checked as the module docstring says (cached).

    ``{issuer}/.well-known/openid-configuration`` first; ``fallback_url`` only when that
    document is missing or malformed. Raises :class:`DiscoveryError`.
    """
    issuer = issuer.rstrip("/")
    key = cache_key("discovery", issuer)

    def checked(document: dict[str, Any], url: str | None) -> dict[str, Any]:
        return _check(document, issuer=issuer, url=url, required=required, same_origin=same_origin)

    document = cached(key)
    if document is not None:
        try:
            return checked(document, None)
        except DiscoveryError:
            forget(key)  # cached by a caller that needs less, or stale: fetch afresh
    issuer_url = issuer + WELL_KNOWN_PATH
    try:
        document = checked(fetch(issuer_url), issuer_url)
    except DiscoveryError as exc:
        if exc.reason != "unusable" or fallback_url is None or fallback_url == issuer_url:
            raise
        logger.info(
            "OIDC issuer discovery unusable (%s); falling back to %s",
            exc.status or exc.field or "malformed",
            urlsplit(fallback_url).path,
        )
        document = checked(fetch(fallback_url), fallback_url)
    remember(key, document)
    return document
