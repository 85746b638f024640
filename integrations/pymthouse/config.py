"""Client configuration, read lazily from ``django.conf.settings``.

Read at client construction (``PymthouseClient.from_settings()``/``get_client()``), never
at import time, so ``override_settings`` in tests takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from integrations.pymthouse.identifiers import is_public_client_id
from integrations.pymthouse.types import SecretToken

DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 15.0
DEFAULT_TOKEN_EXPIRY_SKEW_SECONDS = 60
DEFAULT_DISCOVERY_CACHE_SECONDS = 300
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True, slots=True)
class PymthouseConfig:
    """Everything the client needs. Hashable, so it keys the ``get_client()`` cache."""

    base_url: str
    issuer: str
    public_client_id: str
    m2m_client_id: str
    m2m_client_secret: SecretToken = field(repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    token_expiry_skew_seconds: int = DEFAULT_TOKEN_EXPIRY_SKEW_SECONDS
    discovery_cache_seconds: int = DEFAULT_DISCOVERY_CACHE_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES

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
        if self.token_expiry_skew_seconds < 0 or self.discovery_cache_seconds < 0:
            raise ImproperlyConfigured("PYMTHOUSE_*_SECONDS must not be negative")
        if self.max_retries < 0:
            raise ImproperlyConfigured("PYMTHOUSE_MAX_RETRIES must not be negative")

    @classmethod
    def from_settings(cls) -> PymthouseConfig:
        base_url = str(getattr(settings, "PYMTHOUSE_URL", "") or "").rstrip("/")
        issuer = str(getattr(settings, "PYMTHOUSE_ISSUER", "") or "").rstrip("/")
        secret = str(getattr(settings, "PYMTHOUSE_M2M_CLIENT_SECRET", "") or "")
        if not base_url:
            raise ImproperlyConfigured("PYMTHOUSE_URL is required")
        if not secret:
            raise ImproperlyConfigured("PYMTHOUSE_M2M_CLIENT_SECRET is required")
        try:
            return cls(
                base_url=base_url,
                issuer=issuer or f"{base_url}/api/v1/oidc",
                public_client_id=str(getattr(settings, "PYMTHOUSE_PUBLIC_CLIENT_ID", "") or ""),
                m2m_client_id=str(getattr(settings, "PYMTHOUSE_M2M_CLIENT_ID", "") or ""),
                m2m_client_secret=SecretToken(secret),
                connect_timeout=float(
                    getattr(settings, "PYMTHOUSE_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
                ),
                read_timeout=float(
                    getattr(settings, "PYMTHOUSE_READ_TIMEOUT", DEFAULT_READ_TIMEOUT)
                ),
                token_expiry_skew_seconds=int(
                    getattr(
                        settings,
                        "PYMTHOUSE_TOKEN_EXPIRY_SKEW_SECONDS",
                        DEFAULT_TOKEN_EXPIRY_SKEW_SECONDS,
                    )
                ),
                discovery_cache_seconds=int(
                    getattr(
                        settings,
                        "PYMTHOUSE_DISCOVERY_CACHE_SECONDS",
                        DEFAULT_DISCOVERY_CACHE_SECONDS,
                    )
                ),
                max_retries=int(getattr(settings, "PYMTHOUSE_MAX_RETRIES", DEFAULT_MAX_RETRIES)),
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"invalid PYMTHOUSE_* setting: {exc}") from exc
