"""Client configuration, built from the flat ``LIVEPEER_*`` settings.

``config/settings.py`` holds every default and builds this once at import (an invalid
value stops the process there). Backends rebuild it from ``django.conf.settings`` at the
start of every ``generate`` call, so ``override_settings`` and pytest-django's
``settings`` fixture take effect; there are no defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class LivepeerConfig:
    """Timeouts and limits for one ``generate`` call.

    ``signer_read_timeout`` bounds every short control-plane read: discovery,
    ``sign-orchestrator-info``, ``generate-live-payment``, the unpaid runner challenge,
    ``refresh-payment`` and queue status polls. ``read_timeout`` bounds the calls that
    run inference (paid runner call, gateway POST) and image downloads.
    """

    gateway_url: str
    connect_timeout: float
    read_timeout: float
    signer_read_timeout: float
    queue_poll_interval: float
    queue_timeout: float
    max_image_bytes: int
    max_price_markup: Decimal
    max_response_bytes: int
    allow_private_addresses: bool
    runner_app_path: str
    gateway_honours_user_tokens: bool
    discovery_cache_seconds: float = 0.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.gateway_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured("LIVEPEER_GATEWAY_URL must be an absolute http(s) URL")
        for name in ("connect_timeout", "read_timeout", "signer_read_timeout", "queue_timeout"):
            if not getattr(self, name) > 0:
                raise ImproperlyConfigured(f"LIVEPEER_{name.upper()} must be positive")
        if not self.discovery_cache_seconds >= 0:
            raise ImproperlyConfigured("LIVEPEER_DISCOVERY_CACHE_SECONDS must not be negative")
        if self.queue_poll_interval < 0:
            raise ImproperlyConfigured("LIVEPEER_QUEUE_POLL_INTERVAL must not be negative")
        if self.max_image_bytes <= 0:
            raise ImproperlyConfigured("LIVEPEER_MAX_IMAGE_BYTES must be positive")
        if self.max_response_bytes <= 0:
            raise ImproperlyConfigured("LIVEPEER_MAX_RESPONSE_BYTES must be positive")
        if "?" in self.runner_app_path or "#" in self.runner_app_path:
            raise ImproperlyConfigured("LIVEPEER_RUNNER_APP_PATH must be a plain path")
        if not self.max_price_markup.is_finite() or self.max_price_markup < 1:
            raise ImproperlyConfigured("LIVEPEER_MAX_PRICE_MARKUP must be a decimal >= 1")

    @property
    def signer_timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.signer_read_timeout)

    @property
    def inference_timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    @property
    def max_result_bytes(self) -> int:
        """Cap on a JSON body that may carry an image as a base64 ``data:`` URL."""
        return self.max_response_bytes + self.max_image_bytes * 4 // 3 + 4

    @classmethod
    def from_settings(cls, source: Any = None) -> LivepeerConfig:
        """From ``source`` (default ``django.conf.settings``): any object with the settings
        as attributes, e.g. the settings module's own namespace while it is imported."""
        values = settings if source is None else source
        try:
            return cls(
                # An empty gateway URL means pymthouse's own (it serves the batch API).
                gateway_url=str(values.LIVEPEER_GATEWAY_URL or values.PYMTHOUSE_URL).rstrip("/"),
                connect_timeout=float(values.LIVEPEER_CONNECT_TIMEOUT),
                read_timeout=float(values.LIVEPEER_READ_TIMEOUT),
                signer_read_timeout=float(values.LIVEPEER_SIGNER_READ_TIMEOUT),
                queue_poll_interval=float(values.LIVEPEER_QUEUE_POLL_INTERVAL),
                queue_timeout=float(values.LIVEPEER_QUEUE_TIMEOUT),
                max_image_bytes=int(values.LIVEPEER_MAX_IMAGE_BYTES),
                max_price_markup=Decimal(str(values.LIVEPEER_MAX_PRICE_MARKUP)),
                max_response_bytes=int(values.LIVEPEER_MAX_RESPONSE_BYTES),
                allow_private_addresses=bool(values.LIVEPEER_ALLOW_PRIVATE_ADDRESSES),
                runner_app_path=str(values.LIVEPEER_RUNNER_APP_PATH or ""),
                gateway_honours_user_tokens=bool(values.LIVEPEER_GATEWAY_HONOURS_USER_TOKENS),
                discovery_cache_seconds=float(values.LIVEPEER_DISCOVERY_CACHE_SECONDS),
            )
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ImproperlyConfigured(f"invalid LIVEPEER_* setting: {exc}") from exc


def backend_name_from_settings() -> str:
    return str(settings.INFERENCE_BACKEND)
