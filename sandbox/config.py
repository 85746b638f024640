"""Sandbox configuration: static settings from the environment, plus runtime knobs.

Static settings (host, port, app credentials, models) are read once at start-up.
Runtime knobs (:class:`RuntimeConfig`) start from the environment and can be changed
through ``PUT /__sandbox/config``; ``POST /__sandbox/reset`` restores the start-up values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PUBLIC_CLIENT_ID = "app_b50c8e3d43c6d3641cae2e66"
DEFAULT_M2M_CLIENT_ID = "m2m_b50c8e3d43c6d3641cae2e66"
DEFAULT_M2M_CLIENT_SECRET = (
    "pmth_cs_d219242171aaac09ef84f4b5af2f26e2abf754b68d78b9462ca567a2e8a0cbfe"
)
DEFAULT_MODELS = ("ByteDance/SDXL-Lightning", "black-forest-labs/FLUX.1-schnell")
# The app's confidential web sibling (authorization_code only, docs/identity.md).
DEFAULT_WEB_CLIENT_ID = "web_b50c8e3d43c6d3641cae2e66"
DEFAULT_WEB_CLIENT_SECRET = (
    "pmth_cs_5f0c1b7e2a9d4c6b8e3f1a0d7c5b9e2f4a6c8d0b1e3f5a7c9d2b4f6e8a0c1d3e"
)
# A runner's flat per-call price (wei) and unit unless configured otherwise.
DEFAULT_RUNNER_PRICE_WEI = 4_768_371_000_000
DEFAULT_RUNNER_UNIT = "fixed"
# The price units go-livepeer's remote discovery accepts (server/remote_discovery.go
# validateRunnerPrice); the sandbox can be told to advertise others, which discovery drops.
RUNNER_UNITS = ("fixed", "seconds", "720p-pixel-seconds")

# Scopes of the public app client (docs/upstream.md §P1).
APP_ALLOWED_SCOPES = ("openid", "sign:job", "users:read", "users:write", "users:token")

RUNNER_MODES = ("sync", "queue")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ConfigError(ValueError):
    """A configuration value could not be parsed."""


def m2m_allowed_scopes(app_scopes: tuple[str, ...]) -> tuple[str, ...]:
    """The M2M sibling's scopes, derived from the public client's (docs/upstream.md §P1)."""
    scopes = ["users:token", "users:write", "device:approve"]
    if "sign:job" in app_scopes:
        scopes.append("sign:job")
    if "users:read" in app_scopes:
        scopes.append("users:read")
    if "sign:job" in app_scopes:
        scopes.append("sign:mint_user_token")
    return tuple(scopes)


@dataclasses.dataclass
class RuntimeConfig:
    """Knobs that tests flip at run time through the control API."""

    usage_lag_seconds: float = 0.0
    eth_usd: Decimal = Decimal("3000")
    runner_latency_seconds: float = 0.0
    latency_seconds: float = 0.0
    open_meter_enabled: bool = True
    runner_mode: str = "sync"
    default_balance_usd_micros: int = 5_000_000
    discovery_empty: bool = False
    payment_params_ttl_seconds: float = 600.0

    def copy(self) -> RuntimeConfig:
        return dataclasses.replace(self)

    def as_json(self) -> dict[str, object]:
        return {
            "usageLagSeconds": self.usage_lag_seconds,
            "ethUsd": str(self.eth_usd),
            "runnerLatencySeconds": self.runner_latency_seconds,
            "latencySeconds": self.latency_seconds,
            "openMeterEnabled": self.open_meter_enabled,
            "runnerMode": self.runner_mode,
            "defaultBalanceUsdMicros": str(self.default_balance_usd_micros),
            "discoveryEmpty": self.discovery_empty,
            "paymentParamsTtlSeconds": self.payment_params_ttl_seconds,
        }

    def update_from_json(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update (camelCase keys); raise ConfigError on any bad key or value.

        All values are validated before any is applied, so a bad request changes nothing.
        """
        parsed: dict[str, object] = {}
        for key, value in changes.items():
            if key == "usageLagSeconds":
                parsed["usage_lag_seconds"] = parse_seconds(value, key)
            elif key == "ethUsd":
                parsed["eth_usd"] = parse_eth_usd(value, key)
            elif key == "runnerLatencySeconds":
                parsed["runner_latency_seconds"] = parse_seconds(value, key)
            elif key == "paymentParamsTtlSeconds":
                parsed["payment_params_ttl_seconds"] = parse_seconds(value, key)
            elif key == "latencySeconds":
                parsed["latency_seconds"] = parse_seconds(value, key)
            elif key in ("openMeterEnabled", "discoveryEmpty"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{key} must be a boolean")
                parsed["open_meter_enabled" if key == "openMeterEnabled" else "discovery_empty"] = (
                    value
                )
            elif key == "runnerMode":
                if value not in RUNNER_MODES:
                    raise ConfigError(f"{key} must be one of: {', '.join(RUNNER_MODES)}")
                parsed["runner_mode"] = value
            elif key == "defaultBalanceUsdMicros":
                parsed["default_balance_usd_micros"] = parse_integer(value, key)
            else:
                raise ConfigError(f"unknown config key: {key}")
        for name, value in parsed.items():
            setattr(self, name, value)


BILLING_MODES = ("owner_rollup", "merchant")


@dataclasses.dataclass(frozen=True)
class BillingDefaults:
    """Start-up billing config (``PUT /__sandbox/billing`` changes it, reset restores it).

    The defaults are the real local server: owner_rollup, no OpenMeter/Stripe, no
    Connected Account; Stripe's webhook lands about a second after payment.
    """

    mode: str = "owner_rollup"
    enabled: bool = False
    connect_ready: bool = False
    credit_delay_seconds: float = 1.0


@dataclasses.dataclass(frozen=True)
class SandboxSettings:
    """Static settings, fixed for the life of the process."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    app_id: str = DEFAULT_PUBLIC_CLIENT_ID
    m2m_client_id: str = DEFAULT_M2M_CLIENT_ID
    m2m_client_secret: str = DEFAULT_M2M_CLIENT_SECRET
    app_allowed_scopes: tuple[str, ...] = APP_ALLOWED_SCOPES
    web_client_id: str = DEFAULT_WEB_CLIENT_ID
    web_client_secret: str = DEFAULT_WEB_CLIENT_SECRET
    # Exact redirect URIs registered for the web client; empty = any loopback callback.
    web_redirect_uris: tuple[str, ...] = ()
    models: tuple[str, ...] = DEFAULT_MODELS
    runner_price_wei: int = DEFAULT_RUNNER_PRICE_WEI
    runner_unit: str = DEFAULT_RUNNER_UNIT
    log_level: str = "info"
    runtime_defaults: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    billing_defaults: BillingDefaults = dataclasses.field(default_factory=BillingDefaults)

    @property
    def issuer(self) -> str:
        return f"{self.public_url}/api/v1/oidc"

    @property
    def signer_url(self) -> str:
        return f"{self.public_url}/signer"

    @property
    def m2m_allowed_scopes(self) -> tuple[str, ...]:
        return m2m_allowed_scopes(self.app_allowed_scopes)


def parse_integer(value: object, name: str, *, minimum: int | None = None) -> int:
    """An exact integer from a JSON int or a decimal-integer string (never a float)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer or an integer string")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.isascii():
        result = int(value.strip())
    else:
        raise ConfigError(f"{name} must be an integer or an integer string")
    if minimum is not None and result < minimum:
        raise ConfigError(f"{name} must be >= {minimum}")
    return result


def parse_seconds(value: object, name: str) -> float:
    """A non-negative duration in seconds (durations may be fractional; money never is)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigError(f"{name} must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds") from exc
    if not seconds >= 0:
        raise ConfigError(f"{name} must be >= 0")
    return seconds


def parse_eth_usd(value: object, name: str) -> Decimal:
    """A positive ETH/USD rate as an exact Decimal (from a string, int or parsed Decimal)."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ConfigError(f"{name} must be a decimal string")
    try:
        rate = Decimal(value)
    except InvalidOperation as exc:
        raise ConfigError(f"{name} must be a decimal string") from exc
    if not rate.is_finite() or rate <= 0:
        raise ConfigError(f"{name} must be a positive decimal")
    return rate


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (true/false)")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    public_url: str | None = None,
    log_level: str | None = None,
) -> SandboxSettings:
    """Build settings from the environment; explicit arguments (CLI flags) win over it."""
    env = os.environ if environ is None else environ
    resolved_host = host or env.get("SANDBOX_HOST") or DEFAULT_HOST
    resolved_port = (
        port
        if port is not None
        else parse_integer(env.get("SANDBOX_PORT", DEFAULT_PORT), "SANDBOX_PORT", minimum=0)
    )
    resolved_public_url = (
        public_url or env.get("SANDBOX_PUBLIC_URL") or f"http://{resolved_host}:{resolved_port}"
    ).rstrip("/")
    models = tuple(
        model.strip()
        for model in env.get("SANDBOX_MODELS", ",".join(DEFAULT_MODELS)).split(",")
        if model.strip()
    )
    if not models:
        raise ConfigError("SANDBOX_MODELS must name at least one model")
    resolved_log_level = (log_level or env.get("SANDBOX_LOG_LEVEL") or "info").lower()
    if resolved_log_level not in LOG_LEVELS:
        # No "trace": uvicorn's trace level would log ASGI messages, headers included.
        raise ConfigError(f"SANDBOX_LOG_LEVEL must be one of: {', '.join(LOG_LEVELS)}")
    runtime = RuntimeConfig(
        usage_lag_seconds=parse_seconds(
            env.get("SANDBOX_USAGE_LAG_SECONDS", "0"), "SANDBOX_USAGE_LAG_SECONDS"
        ),
        eth_usd=parse_eth_usd(env.get("SANDBOX_ETH_USD", "3000"), "SANDBOX_ETH_USD"),
        runner_latency_seconds=parse_seconds(
            env.get("SANDBOX_RUNNER_LATENCY_SECONDS", "0"), "SANDBOX_RUNNER_LATENCY_SECONDS"
        ),
        latency_seconds=parse_seconds(
            env.get("SANDBOX_LATENCY_SECONDS", "0"), "SANDBOX_LATENCY_SECONDS"
        ),
        open_meter_enabled=_parse_bool(
            env.get("SANDBOX_OPENMETER_ENABLED", "true"), "SANDBOX_OPENMETER_ENABLED"
        ),
        runner_mode=env.get("SANDBOX_RUNNER_MODE", "sync"),
        default_balance_usd_micros=parse_integer(
            env.get("SANDBOX_DEFAULT_BALANCE_USD_MICROS", "5000000"),
            "SANDBOX_DEFAULT_BALANCE_USD_MICROS",
        ),
    )
    if runtime.runner_mode not in RUNNER_MODES:
        raise ConfigError(f"SANDBOX_RUNNER_MODE must be one of: {', '.join(RUNNER_MODES)}")
    runner_price_wei = parse_integer(
        env.get("SANDBOX_RUNNER_PRICE_WEI", str(DEFAULT_RUNNER_PRICE_WEI)),
        "SANDBOX_RUNNER_PRICE_WEI",
        minimum=1,
    )
    runner_unit = env.get("SANDBOX_RUNNER_UNIT", DEFAULT_RUNNER_UNIT).strip().lower()
    if runner_unit not in RUNNER_UNITS:
        raise ConfigError(f"SANDBOX_RUNNER_UNIT must be one of: {', '.join(RUNNER_UNITS)}")
    billing_mode = env.get("SANDBOX_BILLING_MODE", "owner_rollup").strip().lower()
    if billing_mode not in BILLING_MODES:
        raise ConfigError(f"SANDBOX_BILLING_MODE must be one of: {', '.join(BILLING_MODES)}")
    billing = BillingDefaults(
        mode=billing_mode,
        enabled=_parse_bool(env.get("SANDBOX_BILLING_ENABLED", "false"), "SANDBOX_BILLING_ENABLED"),
        connect_ready=_parse_bool(
            env.get("SANDBOX_CONNECT_READY", "false"), "SANDBOX_CONNECT_READY"
        ),
        credit_delay_seconds=parse_seconds(
            env.get("SANDBOX_CREDIT_DELAY_SECONDS", "1"), "SANDBOX_CREDIT_DELAY_SECONDS"
        ),
    )
    return SandboxSettings(
        host=resolved_host,
        port=resolved_port,
        public_url=resolved_public_url,
        app_id=env.get("PYMTHOUSE_PUBLIC_CLIENT_ID") or DEFAULT_PUBLIC_CLIENT_ID,
        m2m_client_id=env.get("PYMTHOUSE_M2M_CLIENT_ID") or DEFAULT_M2M_CLIENT_ID,
        m2m_client_secret=env.get("PYMTHOUSE_M2M_CLIENT_SECRET") or DEFAULT_M2M_CLIENT_SECRET,
        web_client_id=env.get("SANDBOX_WEB_CLIENT_ID") or DEFAULT_WEB_CLIENT_ID,
        web_client_secret=env.get("SANDBOX_WEB_CLIENT_SECRET") or DEFAULT_WEB_CLIENT_SECRET,
        web_redirect_uris=tuple(
            uri.strip()
            for uri in env.get("SANDBOX_WEB_REDIRECT_URIS", "").split(",")
            if uri.strip()
        ),
        models=models,
        runner_price_wei=runner_price_wei,
        runner_unit=runner_unit,
        log_level=resolved_log_level,
        runtime_defaults=runtime,
        billing_defaults=billing,
    )
