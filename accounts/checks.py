"""System checks for the identity settings (``manage.py check --deploy``).

Ids are stable: accounts.E010+ are errors, accounts.W010+ warnings (E001-E009 and
W001-W009 are the pymthouse client's, in ``integrations/pymthouse/checks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_identity_deploy_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Production identity settings: https issuers and mail that is actually delivered."""
    messages: list[CheckMessage] = []
    apps = settings.SOCIALACCOUNT_PROVIDERS.get("openid_connect", {}).get("APPS", [])
    for app in apps:
        server_url = str(app.get("settings", {}).get("server_url", ""))
        if urlsplit(server_url).scheme != "https":
            messages.append(
                Error(
                    f"SSO provider {app.get('provider_id')!r} issuer must be https, "
                    f"got {server_url!r}.",
                    id="accounts.E010",
                )
            )
    if settings.EMAIL_BACKEND.endswith((".console.EmailBackend", ".locmem.EmailBackend")):
        messages.append(
            Warning(
                "EMAIL_BACKEND does not deliver mail; verification and reset mails are lost.",
                hint="Set DJANGO_EMAIL_BACKEND (SMTP by default) and the DJANGO_EMAIL_* settings.",
                id="accounts.W010",
            )
        )
    return messages
