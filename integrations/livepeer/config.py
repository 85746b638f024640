"""Client configuration, read lazily from ``django.conf.settings`` with defaults.

Read at the start of every ``generate`` call (never at import time), so
``override_settings`` and pytest-django's ``settings`` fixture take effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_BACKEND = "live-runner"
DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_SIGNER_READ_TIMEOUT = 15.0
DEFAULT_QUEUE_POLL_INTERVAL = 1.0
DEFAULT_QUEUE_TIMEOUT = 120.0
DEFAULT_MAX_IMAGE_BYTES = 20_000_000
DEFAULT_MAX_PRICE_MARKUP = "1.012"
DEFAULT_MAX_RESPONSE_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class LivepeerConfig:
    """Timeouts and limits for one ``generate`` call.

    ``signer_read_timeout`` bounds every short control-plane read: discovery,
    ``sign-orchestrator-info``, ``generate-live-payment``, the unpaid runner challenge,
    ``refresh-payment`` and queue status polls. ``read_timeout`` bounds the calls that
    run inference (paid runner call, gateway POST) and image downloads.
    """

    gateway_url: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    signer_read_timeout: float = DEFAULT_SIGNER_READ_TIMEOUT
    queue_poll_interval: float = DEFAULT_QUEUE_POLL_INTERVAL
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_price_markup: Decimal = Decimal(DEFAULT_MAX_PRICE_MARKUP)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    allow_private_addresses: bool = False
    runner_app_path: str = ""
    gateway_honours_user_tokens: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.gateway_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured("LIVEPEER_GATEWAY_URL must be an absolute http(s) URL")
        for name in ("connect_timeout", "read_timeout", "signer_read_timeout", "queue_timeout"):
            if not getattr(self, name) > 0:
                raise ImproperlyConfigured(f"LIVEPEER_{name.upper()} must be positive")
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
    def from_settings(cls) -> LivepeerConfig:
        gateway_url = str(
            getattr(settings, "LIVEPEER_GATEWAY_URL", None)
            or getattr(settings, "PYMTHOUSE_URL", "")
            or ""
        ).rstrip("/")
        try:
            return cls(
                gateway_url=gateway_url,
                connect_timeout=float(
                    getattr(settings, "LIVEPEER_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
                ),
                read_timeout=float(
                    getattr(settings, "LIVEPEER_READ_TIMEOUT", DEFAULT_READ_TIMEOUT)
                ),
                signer_read_timeout=float(
                    getattr(settings, "LIVEPEER_SIGNER_READ_TIMEOUT", DEFAULT_SIGNER_READ_TIMEOUT)
                ),
                queue_poll_interval=float(
                    getattr(settings, "LIVEPEER_QUEUE_POLL_INTERVAL", DEFAULT_QUEUE_POLL_INTERVAL)
                ),
                queue_timeout=float(
                    getattr(settings, "LIVEPEER_QUEUE_TIMEOUT", DEFAULT_QUEUE_TIMEOUT)
                ),
                max_image_bytes=int(
                    getattr(settings, "LIVEPEER_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)
                ),
                max_price_markup=Decimal(
                    str(getattr(settings, "LIVEPEER_MAX_PRICE_MARKUP", DEFAULT_MAX_PRICE_MARKUP))
                ),
                max_response_bytes=int(
                    getattr(settings, "LIVEPEER_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES)
                ),
                allow_private_addresses=bool(
                    getattr(settings, "LIVEPEER_ALLOW_PRIVATE_ADDRESSES", False)
                ),
                runner_app_path=str(getattr(settings, "LIVEPEER_RUNNER_APP_PATH", "") or ""),
                gateway_honours_user_tokens=bool(
                    getattr(settings, "LIVEPEER_GATEWAY_HONOURS_USER_TOKENS", False)
                ),
            )
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ImproperlyConfigured(f"invalid LIVEPEER_* setting: {exc}") from exc


def backend_name_from_settings() -> str:
    return str(getattr(settings, "INFERENCE_BACKEND", None) or DEFAULT_BACKEND)
