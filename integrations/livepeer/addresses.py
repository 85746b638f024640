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
"""

from __future__ import annotations

import ipaddress
import socket
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


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
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
        if _unmapped(address) in METADATA_ADDRESSES:
            # Never a runner or an image host, whatever the setting says.
            return f"resolves to the cloud metadata address {address}"
        if not allow_private and _is_refused(address):
            return (
                f"resolves to the non-public address {address}"
                " (set LIVEPEER_ALLOW_PRIVATE_ADDRESSES to allow it)"
            )
    return None


def check_url(url: str, *, allow_private: bool, what: str, request_id: str) -> None:
    """Raise :class:`LivepeerProtocolError` when ``url`` may not be fetched."""
    reason = refused_reason(url, allow_private=allow_private)
    if reason is not None:
        host = urlsplit(url).hostname or "?"
        raise LivepeerProtocolError(
            f"livepeer {what} URL on host {host[:100]} refused: {reason}", request_id=request_id
        )
