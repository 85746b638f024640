"""The public value types of the Livepeer client (house style R10).

Everything the inference service hands in or gets back is a frozen dataclass. Tokens
are accepted either as a plain ``str`` or as any object with a ``reveal()`` method
(the pymthouse client's ``SecretToken``); they are excluded from ``repr`` and only
unwrapped, through :func:`raw_token`, where they are put on the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable
from urllib.parse import urlsplit

from integrations.livepeer.imageformat import image_dimensions


@runtime_checkable
class RevealsSecret(Protocol):
    """A secret wrapper such as ``integrations.pymthouse.types.SecretToken``."""

    def reveal(self) -> str: ...


Token: TypeAlias = "str | RevealsSecret"  # noqa: S105 -- a type, not a secret


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+", re.ASCII)

#: Upper bounds of the upstream strings the caller stores (the ``Generation`` columns).
#: They are checked where the string arrives, before any payment is claimed.
MAX_MANIFEST_ID_CHARS = 200
MAX_RUNNER_URL_CHARS = 500
MAX_REQUEST_ID_CHARS = 200
#: An upstream identifier we store: short, visible ASCII without separators.
UPSTREAM_ID = re.compile(r"[A-Za-z0-9._:~-]+", re.ASCII)


def is_upstream_id(value: object, *, max_chars: int) -> bool:
    """True when ``value`` is an identifier we may store (see :data:`UPSTREAM_ID`)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_chars
        and UPSTREAM_ID.fullmatch(value) is not None
    )


def raw_token(token: Token) -> str:
    """The raw bearer value of ``token``. Call only where it is sent over the wire.

    Only visible ASCII is accepted: ``requests`` quotes an invalid header value in its
    exception text, which would put the token into tracebacks.
    """
    value = token if isinstance(token, str) else token.reveal()
    if not isinstance(value, str) or not value:
        raise ValueError("a bearer token must be a non-empty string")
    if not _HEADER_SAFE.fullmatch(value):
        raise ValueError("a bearer token may only contain visible ASCII characters")
    return value


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an absolute http(s) URL")


@dataclass(frozen=True)
class ImageRequest:
    """One text-to-image generation.

    ``request_id`` is our generation id, used in logs and error messages (and as
    ``X-Request-Id`` to AI gateways). It is not a join key upstream: go-livepeer
    ignores a caller's ``gatewayRequestId``; usage joins on the challenge's
    ``manifest_id`` (docs/upstream.md §L9).
    """

    request_id: str
    model_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    seed: int | None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id is required")
        if not self.model_id:
            raise ValueError("model_id is required")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError("seed must be an integer or None")

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class GeneratedImage:
    """One image's bytes. ``content_type`` comes from the magic bytes, not a header."""

    content: bytes = field(repr=False)
    content_type: str
    seed: int | None
    nsfw: bool

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """``(width, height)`` read from the PNG IHDR / JPEG SOF header, if present."""
        return image_dimensions(self.content)


@dataclass(frozen=True)
class InferenceResult:
    """What one successful ``generate`` produced.

    ``tickets_paid`` counts the payments this call obtained from the signer (0 on the
    ai-gateway backend, which pays orchestrators itself, and 0 when a runner served
    the call from an already funded balance).
    """

    images: tuple[GeneratedImage, ...]
    runner_url: str | None
    manifest_id: str | None
    upstream_request_id: str | None
    tickets_paid: int


@dataclass(frozen=True)
class PaymentRecord:
    """What one payment bought, known at payment time (docs/upstream.md §L6).

    ``expected_fee_wei`` is the figure billing debits: for a ``fixed`` runner it is the
    runner's price, for ``seconds`` the price times the seconds the payment covers. It
    never depends on a later usage report. On the ai-gateway backend nothing is known
    about the price (the gateway pays with its own key): all money fields are ``None``.
    """

    manifest_id: str | None
    runner_url: str | None
    price_wei: int | None = None
    price_unit: str = ""
    units_paid: int | None = None
    expected_fee_wei: int | None = None


class PaymentGuard(Protocol):
    """Lets the caller make "never pay twice for one generation" hold across processes.

    The backend calls ``claim(manifest_id=…, runner_url=…)`` immediately before every
    request that may spend money (a signer ticket request, an AI-gateway POST), naming the
    challenge it is about to pay for, so that the join key of an ambiguous payment is
    stored before the payment is asked for. ``claim()`` may raise to abort; the
    exception propagates unchanged and nothing is sent. Each claim is followed by
    exactly one of:

    * ``release()``: that request definitely spent nothing (an error status from the
      signer/gateway, or the connection failed before the request was sent);
    * ``confirm(record)``: money was, or may have been, spent (signer 200; gateway 200);
      ``record`` says what was bought and what it is expected to cost.

    A claim followed by neither (``generate`` raised ``LivepeerOutcomeUnknownError``, or
    the process died) means the outcome is unknown: do not pay again for this request.
    """

    def claim(self, *, manifest_id: str | None, runner_url: str | None) -> None: ...

    def release(self) -> None: ...

    def confirm(self, record: PaymentRecord) -> None: ...


@dataclass(frozen=True)
class SignerCredentials:
    """Where and how to buy tickets: from pymthouse's ``SignerSession``."""

    signer_url: str
    discovery_url: str
    access_token: Token = field(repr=False)

    def __post_init__(self) -> None:
        _check_http_url("signer_url", self.signer_url)
        _check_http_url("discovery_url", self.discovery_url)
        raw_token(self.access_token)

    @classmethod
    def from_signer_session(cls, session: _SignerSessionLike) -> SignerCredentials:
        """Build from ``integrations.pymthouse.types.SignerSession`` (or anything alike)."""
        return cls(
            signer_url=session.signer_url.rstrip("/"),
            discovery_url=session.discovery_url,
            access_token=session.access_token,
        )


@dataclass(frozen=True)
class GatewayCredentials:
    """An AI gateway and, optionally, a user JWT sent as ``Authorization: Bearer``.

    go-livepeer's gateway ignores ``Authorization`` and pays with its own key, so no
    token is sent unless the gateway is known to honour one
    (``LIVEPEER_GATEWAY_HONOURS_USER_TOKENS``).
    """

    gateway_url: str
    bearer_token: Token | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_http_url("gateway_url", self.gateway_url)
        if self.bearer_token is not None:
            raw_token(self.bearer_token)


class _SignerSessionLike(Protocol):
    @property
    def signer_url(self) -> str: ...

    @property
    def discovery_url(self) -> str: ...

    @property
    def access_token(self) -> Token: ...


Credentials: TypeAlias = "SignerCredentials | GatewayCredentials"


def check_max_fee_wei(max_fee_wei: int | None) -> None:
    """``max_fee_wei`` must be ``None`` or a whole number of wei >= 0 (never a bool)."""
    if max_fee_wei is None:
        return
    if isinstance(max_fee_wei, bool) or not isinstance(max_fee_wei, int):
        raise TypeError("max_fee_wei must be an int (wei) or None")
    if max_fee_wei < 0:
        raise ValueError("max_fee_wei must not be negative")


class InferenceBackend(Protocol):
    """One way of turning an :class:`ImageRequest` into images (see ``backends.py``).

    ``max_fee_wei`` is this image's hard ceiling: the most its one payment may cost at
    the network, in wei (``None``: no ceiling beyond ``LIVEPEER_MAX_PRICE_MARKUP``).
    Backends that pay through the remote signer enforce it before anything is claimed;
    the ai-gateway backend accepts it but cannot enforce it (the gateway pays).
    """

    name: str

    def generate(
        self,
        request: ImageRequest,
        *,
        credentials: SignerCredentials | GatewayCredentials,
        guard: PaymentGuard,
        max_fee_wei: int | None = None,
    ) -> InferenceResult: ...
