"""Client configuration, built from the flat ``PYMTHOUSE_*`` settings.

``config/settings.py`` holds every default and builds this once at import (an invalid
value stops the process there). The client rebuilds it from ``django.conf.settings`` at
construction (``PymthouseClient.from_settings()``/``get_client()``), so
``override_settings`` in tests takes effect; there are no defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from integrations.pymthouse.identifiers import is_public_client_id
from integrations.pymthouse.types import SecretToken


@dataclass(frozen=True, slots=True)
class PymthouseConfig:
    """Everything the client needs. Hashable, so it keys the ``get_client()`` cache."""

    base_url: str
    issuer: str
    public_client_id: str
    m2m_client_id: str
    m2m_client_secret: SecretToken = field(repr=False)
    connect_timeout: float
    read_timeout: float
    max_retries: int

    def __post_init__(self) -> None:
        for name, url in (("PYMTHOUSE_URL", self.base_url), ("PYMTHOUSE_ISSUER", self.issuer)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ImproperlyConfigured(f"{name} must be an absolute http(s) URL")
            if parts.query or parts.fragment or url.endswith("/"):
                raise ImproperlyConfigured(f"{name} must have no query, fragment or final /")
        if not is_public_client_id(self.public_client_id):
            raise ImproperlyConfigured("PYMTHOUSE_PUBLIC_CLIENT_ID must look like app_<hex>")
        if not self.m2m_client_id:
            raise ImproperlyConfigured("PYMTHOUSE_M2M_CLIENT_ID is required")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ImproperlyConfigured("PYMTHOUSE_CONNECT/READ_TIMEOUT must be positive")
        if self.max_retries < 0:
            raise ImproperlyConfigured("PYMTHOUSE_MAX_RETRIES must not be negative")

    @classmethod
    def from_settings(cls, source: Any = None) -> PymthouseConfig:
        """From ``source`` (default ``django.conf.settings``): any object with the settings
        as attributes, e.g. the settings module's own namespace while it is imported."""
        values = settings if source is None else source
        base_url = str(values.PYMTHOUSE_URL or "").rstrip("/")
        issuer = str(values.PYMTHOUSE_ISSUER or "").rstrip("/")
        secret = str(values.PYMTHOUSE_M2M_CLIENT_SECRET or "")
        if not base_url:
            raise ImproperlyConfigured("PYMTHOUSE_URL is required")
        if not secret:
            raise ImproperlyConfigured("PYMTHOUSE_M2M_CLIENT_SECRET is required")
        try:
            return cls(
                base_url=base_url,
                issuer=issuer or f"{base_url}/api/v1/oidc",
                public_client_id=str(values.PYMTHOUSE_PUBLIC_CLIENT_ID or ""),
                m2m_client_id=str(values.PYMTHOUSE_M2M_CLIENT_ID or ""),
                m2m_client_secret=SecretToken(secret),
                connect_timeout=float(values.PYMTHOUSE_CONNECT_TIMEOUT),
                read_timeout=float(values.PYMTHOUSE_READ_TIMEOUT),
                max_retries=int(values.PYMTHOUSE_MAX_RETRIES),
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"invalid PYMTHOUSE_* setting: {exc}") from exc
