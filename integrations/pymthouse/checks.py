"""System checks for the pymthouse client's settings (``manage.py check``).

Registered by ``accounts.apps`` (integrations is not a Django app). Ids are stable and
keep their historical ``accounts.`` prefix: accounts.E001-E009 are errors,
accounts.W001-W009 warnings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from integrations.pymthouse.identifiers import is_public_client_id

M2M_CLIENT_ID_RE = re.compile(r"^m2m_[a-f0-9]+$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _check_url(name: str, value: Any) -> list[CheckMessage]:
    if not isinstance(value, str) or not value:
        return [Error(f"{name} must be a non-empty URL.", id="accounts.E001")]
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return [
            Error(
                f"{name} must be an absolute http(s) URL, got {value!r}.",
                hint="For example https://pymthouse.com",
                id="accounts.E002",
            )
        ]
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not settings.DEBUG:
        return [
            Error(
                f"{name} must use https outside local development, got {value!r}.",
                id="accounts.E003",
            )
        ]
    return []


@register(Tags.compatibility, deploy=False)
def check_pymthouse_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    messages += _check_url("PYMTHOUSE_URL", settings.PYMTHOUSE_URL)
    messages += _check_url("PYMTHOUSE_ISSUER", settings.PYMTHOUSE_ISSUER)

    public_id = settings.PYMTHOUSE_PUBLIC_CLIENT_ID
    public_ok = isinstance(public_id, str) and is_public_client_id(public_id)
    if not public_ok:
        messages.append(
            Error(
                f"PYMTHOUSE_PUBLIC_CLIENT_ID must look like app_<hex>, got {public_id!r}.",
                hint="The public id of your pymthouse Builder app (used in API paths).",
                id="accounts.E004",
            )
        )
    m2m_id = settings.PYMTHOUSE_M2M_CLIENT_ID
    if not isinstance(m2m_id, str) or not M2M_CLIENT_ID_RE.match(m2m_id):
        messages.append(
            Error(
                f"PYMTHOUSE_M2M_CLIENT_ID must look like m2m_<hex>, got {m2m_id!r}.",
                hint="The machine-to-machine sibling of the app; not a Livepeer Studio key.",
                id="accounts.E005",
            )
        )
    elif public_ok and m2m_id[4:] != public_id[4:]:
        messages.append(
            Warning(
                "PYMTHOUSE_M2M_CLIENT_ID and PYMTHOUSE_PUBLIC_CLIENT_ID have different suffixes.",
                hint="pymthouse derives the m2m_ sibling from the app; check you paired them.",
                id="accounts.W001",
            )
        )
    secret = settings.PYMTHOUSE_M2M_CLIENT_SECRET
    if not isinstance(secret, str) or not secret:
        messages.append(Error("PYMTHOUSE_M2M_CLIENT_SECRET is empty.", id="accounts.E006"))
    elif not secret.startswith("pmth_cs_"):
        messages.append(
            Warning(
                "PYMTHOUSE_M2M_CLIENT_SECRET does not start with pmth_cs_.",
                hint="pymthouse client secrets are pmth_cs_<64 hex>.",
                id="accounts.W002",
            )
        )

    connect = settings.PYMTHOUSE_CONNECT_TIMEOUT
    read = settings.PYMTHOUSE_READ_TIMEOUT
    for name, value in (("PYMTHOUSE_CONNECT_TIMEOUT", connect), ("PYMTHOUSE_READ_TIMEOUT", read)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 300:
            messages.append(
                Error(
                    f"{name} must be a number of seconds in (0, 300], got {value!r}.",
                    id="accounts.E007",
                )
            )
    for name in ("OIDC_DISCOVERY_CACHE_SECONDS", "PYMTHOUSE_MAX_RETRIES"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            messages.append(
                Error(f"{name} must be a non-negative integer, got {value!r}.", id="accounts.E008")
            )
    return messages
