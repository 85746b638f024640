"""Fixtures for the Livepeer client tests: real credentials from the sandbox, a guard."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.livepeer import (
    GatewayCredentials,
    ImageRequest,
    PaymentRecord,
    SignerCredentials,
    get_backend,
)
from integrations.livepeer.signer import clear_payer_address_cache
from integrations.pymthouse import PymthouseClient
from tests.sandbox_server import SandboxControl

MODEL = "ByteDance/SDXL-Lightning"
RUNNER_1_ID = "bytedance-sdxl-lightning-1"
RUNNER_2_ID = "bytedance-sdxl-lightning-2"
#: Discovery publishes ``…/apps/{id}/app``; the client calls it with the trailing slash.
RUNNER_1 = f"/apps/{RUNNER_1_ID}/app/"
RUNNER_2 = f"/apps/{RUNNER_2_ID}/app/"
DEFAULT_PRICE_WEI = 4_768_371_000_000
PAYMENT_PATH = "/signer/generate-live-payment"
SIGNER_INFO_PATH = "/signer/sign-orchestrator-info"
DISCOVERY_PATH = "/signer/discover-orchestrators"
GATEWAY_PATH = "/text-to-image"


class RecordingGuard:
    """A PaymentGuard that records the order of calls (and what was confirmed)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.confirmed: list[tuple[str | None, str | None]] = []
        self.records: list[PaymentRecord] = []

    def claim(self, *, manifest_id: str | None, runner_url: str | None) -> None:
        self.calls.append("claim")

    def release(self) -> None:
        self.calls.append("release")

    def confirm(self, record: PaymentRecord) -> None:
        self.calls.append("confirm")
        self.confirmed.append((record.manifest_id, record.runner_url))
        self.records.append(record)


def image_request(**overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "request_id": f"gen-{uuid.uuid4().hex[:12]}",
        "model_id": MODEL,
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "width": 640,
        "height": 384,
        "seed": 1234,
    }
    values.update(overrides)
    return ImageRequest(**values)


def generate(
    credentials: SignerCredentials,
    guard: RecordingGuard,
    *,
    max_fee_wei: int | None = None,
    **overrides: Any,
) -> Any:
    """One live-runner ``generate`` of a fresh request: ``(request, result)``."""
    request = image_request(**overrides)
    return request, get_backend("live-runner").generate(
        request, credentials=credentials, guard=guard, max_fee_wei=max_fee_wei
    )


def generate_error(
    credentials: SignerCredentials,
    guard: RecordingGuard,
    error: type[Exception],
    *,
    max_fee_wei: int | None = None,
    **overrides: Any,
) -> Any:
    """A live-runner ``generate`` that must raise ``error``: ``(request, exception)``."""
    request = image_request(**overrides)
    with pytest.raises(error) as excinfo:
        get_backend("live-runner").generate(
            request, credentials=credentials, guard=guard, max_fee_wei=max_fee_wei
        )
    return request, excinfo.value


def calls(sandbox: SandboxControl, path: str, method: str = "POST") -> list[dict[str, Any]]:
    """Requests the sandbox saw with exactly this method and path."""
    return [r for r in sandbox.requests(path) if r["method"] == method and r["path"] == path]


def calls_under(sandbox: SandboxControl, prefix: str) -> list[dict[str, Any]]:
    """Every request the sandbox saw whose path starts with ``prefix``."""
    return [r for r in sandbox.requests() if str(r["path"]).startswith(prefix)]


def set_runner(sandbox: SandboxControl, runner_id: str, **changes: Any) -> dict[str, Any]:
    """``PUT /__sandbox/runners/{id}`` (camelCase keys: unit, price, capacity, appFault…)."""
    result: dict[str, Any] = sandbox._call("PUT", f"/runners/{runner_id}", changes)
    return result


def set_runners(sandbox: SandboxControl, **changes: Any) -> None:
    for runner_id in (RUNNER_1_ID, RUNNER_2_ID):
        set_runner(sandbox, runner_id, **changes)


@pytest.fixture(autouse=True)
def _fresh_payer_cache() -> Iterator[None]:
    clear_payer_address_cache()
    yield
    clear_payer_address_cache()


@pytest.fixture
def guard() -> RecordingGuard:
    return RecordingGuard()


@pytest.fixture
def external_user_id() -> str:
    return f"lp-user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def signer_credentials(
    client: PymthouseClient, sandbox: SandboxControl, external_user_id: str
) -> SignerCredentials:
    """A real 300 s signer session for a fresh user, minted by the pymthouse client."""
    session = client.mint_signer_session(external_user_id=external_user_id)
    credentials = SignerCredentials.from_signer_session(session)
    sandbox.clear_requests()
    return credentials


@pytest.fixture
def gateway_credentials(sandbox: SandboxControl) -> GatewayCredentials:
    """The sandbox's go-livepeer gateway, without a user token (it would ignore one)."""
    sandbox.clear_requests()
    return GatewayCredentials(gateway_url=sandbox.url)
