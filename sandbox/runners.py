"""Live runners the sandbox orchestrator serves, and their run-time configuration.

Each runner is one single-shot image app, published by discovery at
``{public}/apps/{runner_id}/app`` (go-livepeer ``ai/runner/live_runner.go``
``discoveryRunnerURL``). Its price is a flat ``fixed`` price per call by default, or a
``seconds`` / ``720p-pixel-seconds`` price, in wei as an exact integer of any size.

Tests change a runner through ``PUT /__sandbox/runners/{id}`` (partial update) and add
one through ``POST /__sandbox/runners``; ``reset`` restores the start-up catalog.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

from sandbox.config import ConfigError, SandboxSettings, parse_integer

logger = logging.getLogger(__name__)

# What an app can be told to do wrong, after the orchestrator accepted the payment.
APP_FAULTS = (
    "drop",  # close the connection without an answer (payment already consumed)
    "oversized",  # a 200 whose body is `bytes` long (default 64 MiB)
    "wrong-size",  # the PNG is 8 px wider and taller than asked
    "jpeg",  # the image is a JPEG (data:image/jpeg) of the requested size
    "image-url",  # the image is an http(s) URL on `host` instead of a data: URL
    "redirect",  # the app answers `status` (default 302) with Location `location`
)
APP_FAULT_KEYS = frozenset({"kind", "times", "bytes", "host", "status", "location"})
RUNNER_KEYS = frozenset({"model", "unit", "price", "capacity", "appFault", "manifestIdLength"})
MAX_RUNNER_ID_LENGTH = 16_000  # one URL path segment; h11 accepts lines up to 64 KiB
DEFAULT_MANIFEST_ID_LENGTH = 8  # go-livepeer core.RandomManifestID: 4 random bytes as hex


@dataclasses.dataclass
class RunnerConfig:
    runner_id: str
    model: str
    unit: str
    price: int
    capacity: int = 100
    app_fault: dict[str, Any] | None = None
    manifest_id_length: int = DEFAULT_MANIFEST_ID_LENGTH
    sessions: set[str] = dataclasses.field(default_factory=set)

    @property
    def app(self) -> str:
        return f"image-generation/{self.model}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.runner_id,
            "model": self.model,
            "app": self.app,
            "unit": self.unit,
            "price": str(self.price),
            "capacity": self.capacity,
            "capacityUsed": len(self.sessions),
            "appFault": self.app_fault,
            "manifestIdLength": self.manifest_id_length,
        }

    def take_app_fault(self) -> dict[str, Any] | None:
        """The configured app fault, consuming one of its ``times``."""
        fault = self.app_fault
        if fault is None:
            return None
        times = fault.get("times")
        if isinstance(times, int):
            if times <= 1:
                self.app_fault = None
            else:
                fault["times"] = times - 1
        return fault


def runner_name(model_id: str, index: int) -> str:
    """``ByteDance/SDXL-Lightning`` -> ``bytedance-sdxl-lightning-1``."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")
    return f"{slug}-{index}"


def runner_catalog(models: tuple[str, ...]) -> dict[str, str]:
    """Two single-shot runners per model (so clients can fail over): runner id -> model id."""
    return {runner_name(model, index): model for model in models for index in (1, 2)}


def default_runners(settings: SandboxSettings) -> dict[str, RunnerConfig]:
    """Two single-shot runners per model, at the start-up price and unit."""
    return {
        runner_id: RunnerConfig(
            runner_id=runner_id,
            model=model,
            unit=settings.runner_unit,
            price=settings.runner_price_wei,
        )
        for runner_id, model in runner_catalog(settings.models).items()
    }


def parse_app_fault(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("appFault must be an object or null")
    unknown = set(value) - APP_FAULT_KEYS
    if unknown:
        raise ConfigError(f"unknown appFault keys: {', '.join(sorted(unknown))}")
    kind = value.get("kind")
    if kind not in APP_FAULTS:
        raise ConfigError(f"appFault.kind must be one of: {', '.join(APP_FAULTS)}")
    fault: dict[str, Any] = {"kind": kind}
    if value.get("times") is not None:
        fault["times"] = parse_integer(value["times"], "appFault.times", minimum=1)
    if kind == "oversized":
        fault["bytes"] = parse_integer(value.get("bytes", 64 * 2**20), "appFault.bytes", minimum=1)
    if kind == "image-url":
        host = value.get("host")
        if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host):
            raise ConfigError("appFault.host must be a host name or address (with optional port)")
        fault["host"] = host
    if kind == "redirect":
        status = parse_integer(value.get("status", 302), "appFault.status", minimum=300)
        if status > 399:
            raise ConfigError("appFault.status must be a 3xx status")
        location = value.get("location", "http://127.0.0.1:9/elsewhere")
        if not isinstance(location, str) or not location:
            raise ConfigError("appFault.location must be a URL string")
        fault["status"], fault["location"] = status, location
    return fault


def apply_runner_update(
    runner: RunnerConfig, changes: Mapping[str, object], models: tuple[str, ...]
) -> None:
    """A partial update (camelCase keys); ConfigError, and no change at all, on any bad value.

    ``unit`` may be any non-empty string: discovery drops runners whose unit go-livepeer
    does not accept, as remote_discovery.go does.
    """
    unknown = set(changes) - RUNNER_KEYS
    if unknown:
        raise ConfigError(f"unknown runner keys: {', '.join(sorted(unknown))}")
    parsed: dict[str, Any] = {}
    if "model" in changes:
        if changes["model"] not in models:
            raise ConfigError(f"model must be one of: {', '.join(models)}")
        parsed["model"] = changes["model"]
    if "unit" in changes:
        unit = changes["unit"]
        if not isinstance(unit, str) or not unit.strip():
            raise ConfigError("unit must be a non-empty string")
        parsed["unit"] = unit.strip().lower()
    if "price" in changes:
        parsed["price"] = parse_integer(changes["price"], "price", minimum=1)
    if "capacity" in changes:
        parsed["capacity"] = parse_integer(changes["capacity"], "capacity", minimum=0)
    if "appFault" in changes:
        parsed["app_fault"] = parse_app_fault(changes["appFault"])
    if "manifestIdLength" in changes:
        length = parse_integer(changes["manifestIdLength"], "manifestIdLength", minimum=2)
        if length % 2 or length > 100_000:
            raise ConfigError("manifestIdLength must be an even number of hex digits <= 100000")
        parsed["manifest_id_length"] = length
    for name, value in parsed.items():
        setattr(runner, name, value)


def new_runner(
    body: Mapping[str, object], settings: SandboxSettings, existing: Mapping[str, RunnerConfig]
) -> RunnerConfig:
    runner_id = body.get("id")
    if not isinstance(runner_id, str) or not re.fullmatch(r"[A-Za-z0-9._~\-]+", runner_id):
        raise ConfigError("id must be a non-empty URL-safe path segment")
    if len(runner_id) > MAX_RUNNER_ID_LENGTH:
        raise ConfigError(f"id must be at most {MAX_RUNNER_ID_LENGTH} characters")
    if runner_id in existing:
        raise ConfigError(f"runner {runner_id} already exists")
    runner = RunnerConfig(
        runner_id=runner_id,
        model=settings.models[0],
        unit=settings.runner_unit,
        price=settings.runner_price_wei,
    )
    apply_runner_update(runner, {k: v for k, v in body.items() if k != "id"}, settings.models)
    return runner
