"""Refusing upstream-supplied URLs that point inside our own network.

Runner URLs come from discovery, image and queue URLs from a runner's answer: all of
them are chosen by someone else, so a hostile orchestrator could point us at
``127.0.0.1``, a private service or a cloud metadata endpoint. Unless
``LIVEPEER_ALLOW_PRIVATE_ADDRESSES`` is on (the sandbox, tests, ``make run``), a URL is
refused when any address its host resolves to is not globally routable (loopback,
RFC 1918, link-local, CGNAT, unique-local, reserved, multicast, unspecified). A
well-known cloud metadata address is refused even then. Image downloads re-check
every redirect hop.

The signer and discovery URLs come from our own configuration (pymthouse) and are
not checked here.

**The check and the connection use one resolution.** Checking a URL and then letting
the HTTP library resolve its host again would let a name that answered a public
address at the check answer ``127.0.0.1`` at the connect (DNS rebinding). So the
Livepeer session (``session.py``) connects through :func:`connect_addresses`: the host
is resolved once per new connection, every address is checked, and the socket is
opened to those checked addresses only; TLS still verifies the certificate against the
URL's host name (SNI and ``Host`` stay the name). :func:`refused_reason` stays as the
early check with a clear message (it refuses a runner before any call).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from integrations.livepeer.errors import LivepeerProtocolError

HTTP_SCHEMES = frozenset({"http", "https"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_refused(address: IPAddress) -> bool:
    address = _unmapped(address)
    return address in METADATA_ADDRESSES or address.is_multicast or not address.is_global


def system_getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The operating system's resolver (a test replaces this to control DNS answers)."""
    return socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = system_getaddrinfo(host, port)
    except (OSError, UnicodeError):
        # Unresolvable: the request itself will fail to connect (nothing is sent).
        return []
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return addresses


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a connection to ``address`` is refused, or ``None``."""
    if _unmapped(address) in METADATA_ADDRESSES:
        # Never a runner or an image host, whatever the setting says.
        return f"resolves to the cloud metadata address {address}"
    if not allow_private and _is_refused(address):
        return (
            f"resolves to the non-public address {address}"
            " (set LIVEPEER_ALLOW_PRIVATE_ADDRESSES to allow it)"
        )
    return None


class AddressRefusedError(Exception):
    """A host resolved (at connect time) to an address we do not connect to."""


def connect_addresses(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """``host``'s addresses, resolved once, each checked: the only ones to connect to.

    Raises :class:`AddressRefusedError` when any of them is refused (as
    :func:`refused_reason` does), and returns ``[]`` when the name does not resolve.
    """
    addresses = _resolve(host, port)
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            raise AddressRefusedError(f"host {host[:100]} {reason}")
    return addresses


def refused_reason(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` must not be fetched, or ``None`` when it may be."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in HTTP_SCHEMES or not parts.hostname:
        return "is not an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "carries credentials"
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return "has an invalid port"
    for address in _resolve(parts.hostname, port):
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            return reason
    return None


def check_url(url: str, *, allow_private: bool, what: str, request_id: str) -> None:
    """Raise :class:`LivepeerProtocolError` when ``url`` may not be fetched."""
    reason = refused_reason(url, allow_private=allow_private)
    if reason is not None:
        host = urlsplit(url).hostname or "?"
        raise LivepeerProtocolError(
            f"livepeer {what} URL on host {host[:100]} refused: {reason}", request_id=request_id
        )
