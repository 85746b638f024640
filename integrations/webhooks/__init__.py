"""Completion webhooks: the signature scheme and the one sender of webhook POSTs.

The only code that talks HTTP to the URLs our users register (house style R8). The
URL is chosen by a user, so it goes through the same address guard as runner URLs
(``integrations.livepeer.addresses``, setting ``LIVEPEER_ALLOW_PRIVATE_ADDRESSES``): a
URL whose host is (or resolves to) a loopback, private, link-local or metadata address
is refused before anything is sent, and the connection itself is pinned to the
addresses that were checked (no second DNS answer: ``pinned_pool_classes``).

Signature (the scheme docs/api.md documents, after Stripe's ``Stripe-Signature``)::

    Pixelhouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

Usage::

    from integrations.webhooks import get_sender, signature_header

    header = signature_header(secret=secret, timestamp=int(time.time()), body=body)
    answer = get_sender().send(url=url, body=body, headers={SIGNATURE_HEADER: header})
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from integrations.http import NO_RETRIES, OutgoingSession, printable
from integrations.livepeer.addresses import refused_reason
from integrations.livepeer.session import AddressPolicy, pinned_pool_classes

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Pixelhouse-Signature"
SIGNATURE_VERSION = "v1"
USER_AGENT = "pixelhouse-webhooks/1.0"
#: A registered URL longer than this is refused (also the model field's length).
MAX_URL_LENGTH = 2000


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the endpoint's secret."""
    signed = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``Pixelhouse-Signature`` value: ``t=<timestamp>,v1=<signature>``."""
    digest = signature(secret=secret, timestamp=timestamp, body=body)
    return f"t={int(timestamp)},{SIGNATURE_VERSION}={digest}"


class WebhookError(Exception):
    """A delivery that got no HTTP answer. ``retryable`` says whether to try again."""

    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WebhookRefusedError(WebhookError):
    """The URL may not be called (not http(s), credentials in it, a non-public address)."""

    retryable = False


class WebhookUnreachableError(WebhookError):
    """Connection refused, unresolvable, reset or timed out: try again later."""


@dataclass(frozen=True)
class WebhookAnswer:
    """The receiver's HTTP status (its body is never read: nothing in it is used)."""

    status_code: int

    @property
    def delivered(self) -> bool:
        return 200 <= self.status_code < 300


def url_refusal(url: str, *, allow_private: bool | None = None) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or ``None`` (checked on save and on send)."""
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if allow_private is None:
        allow_private = bool(settings.LIVEPEER_ALLOW_PRIVATE_ADDRESSES)
    return refused_reason(url, allow_private=allow_private)


class WebhookSender:
    """POSTs signed event bodies; no redirects, no retries here (the task retries)."""

    def __init__(self, *, timeout: tuple[float, float], allow_private: bool) -> None:
        self.allow_private = allow_private
        self.session = OutgoingSession(
            default_timeout=timeout, user_agent=USER_AGENT, retry=NO_RETRIES, pool_maxsize=4
        )
        self.session.trust_env = False  # no proxy or netrc from the environment
        adapter = self.session.get_adapter("https://")
        assert isinstance(adapter, HTTPAdapter)
        adapter.poolmanager.pool_classes_by_scheme = pinned_pool_classes(
            AddressPolicy(allow_private=allow_private)
        )

    def send(self, *, url: str, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
        """POST ``body`` to ``url``; the receiver's status, or a :class:`WebhookError`."""
        host = (urlsplit(url).hostname or "?")[:100]
        reason = url_refusal(url, allow_private=self.allow_private)
        if reason is not None:
            raise WebhookRefusedError(f"webhook URL on host {host} refused: {reason}")
        try:
            response = self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                stream=True,  # the body is never read
            )
        except requests.RequestException as exc:
            # The exception text may carry the URL's query; only the class and host are kept.
            raise WebhookUnreachableError(
                f"webhook to host {host}: {printable(type(exc).__name__)}"
            ) from exc
        response.close()
        return WebhookAnswer(status_code=response.status_code)


def get_sender() -> WebhookSender:
    """A sender built from settings (one per call: a task sends one delivery)."""
    return WebhookSender(
        timeout=(
            float(settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS),
            float(settings.WEBHOOK_READ_TIMEOUT_SECONDS),
        ),
        allow_private=bool(settings.LIVEPEER_ALLOW_PRIVATE_ADDRESSES),
    )


__all__ = [
    "MAX_URL_LENGTH",
    "SIGNATURE_HEADER",
    "WebhookAnswer",
    "WebhookError",
    "WebhookRefusedError",
    "WebhookSender",
    "WebhookUnreachableError",
    "get_sender",
    "signature",
    "signature_header",
    "url_refusal",
]
