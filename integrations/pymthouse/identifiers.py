"""Client-side rules for pymthouse identifiers."""

from __future__ import annotations

import re

# Copied from the official SDK (pymthouse/builder-sdk ``src/external-user-id.ts``); the
# server itself only requires a non-empty string, so this is our guard, not its.
_EXTERNAL_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)
_RESERVED_PREFIXES = ("owner:", "user:")
_PUBLIC_CLIENT_ID = re.compile(r"app_[a-f0-9]+", re.ASCII)


def validate_external_user_id(value: object) -> str:
    """Return ``value`` if it is a valid ``externalUserId``, else raise ``ValueError``.

    Rule (SDK ``parseExternalUserId``): 1-128 chars of ``[A-Za-z0-9._:-]`` starting with
    an ASCII letter or digit, no ``@`` (emails are contact data, never subject keys), and
    no ``owner:``/``user:`` prefix (pymthouse's own transport markers). Unlike the SDK we
    do not trim: surrounding whitespace is rejected, so the id we send is byte-for-byte
    the id the caller stored.
    """
    if not isinstance(value, str):
        raise ValueError("externalUserId must be a string")  # noqa: TRY004 -- one type for callers
    if not value:
        raise ValueError("externalUserId is required")
    if "@" in value:
        raise ValueError("externalUserId must be a machine id, not an email address")
    if value.startswith(_RESERVED_PREFIXES):
        raise ValueError("externalUserId must not use owner: or user: prefixes")
    if not _EXTERNAL_USER_ID.fullmatch(value):
        raise ValueError(
            "externalUserId must be 1-128 chars of [A-Za-z0-9._:-], starting with alphanumeric"
        )
    return value


def is_public_client_id(value: str) -> bool:
    """``app_<hex>``, the public OIDC client id that goes in Builder paths."""
    return bool(_PUBLIC_CLIENT_ID.fullmatch(value))
