"""Remote discovery: GL server/remote_signer.go GetOrchestrators, server/remote_discovery.go.

GL = livepeer/go-livepeer@176aa415ccea4f9861e0dd44e981cda17fb36f52.
"""

from __future__ import annotations

from tests.sandbox.helpers import (
    DEFAULT_PRICE,
    FLUX,
    FLUX_RUNNER,
    SDXL,
    SDXL_RUNNER,
    bearer,
)
from tests.sandbox.livepeer_conformance.support import (
    Caller,
    assert_go_json,
)
from tests.sandbox_server import SandboxControl

# --- discovery: GL server/remote_signer.go GetOrchestrators, server/remote_discovery.go ---


def test_discovery_publishes_fixed_runners_at_their_app_url(caller: Caller, base: str) -> None:
    """GL ai/runner/live_runner.go discoveryRunnerURL: {orch}/apps/{runner}/app; unit fixed."""
    response = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    )
    assert response.status_code == 200
    [orchestrator] = response.json()
    assert orchestrator["address"] == base
    assert orchestrator["score"] == 1
    assert orchestrator["capabilities"] == [f"image-generation/{SDXL}", f"image-generation/{FLUX}"]
    runners = orchestrator["runners"]
    assert [runner["url"] for runner in runners] == [
        f"{base}/apps/bytedance-sdxl-lightning-1/app",
        f"{base}/apps/bytedance-sdxl-lightning-2/app",
        f"{base}/apps/black-forest-labs-flux-1-schnell-1/app",
        f"{base}/apps/black-forest-labs-flux-1-schnell-2/app",
    ]
    assert runners[0] == {
        "url": f"{base}/apps/{SDXL_RUNNER}/app",
        "app": f"image-generation/{SDXL}",
        "mode": "single-shot",
        "capacity": 100,
        "capacity_used": 0,
        "capacity_available": 100,
        "price_info": {"price": DEFAULT_PRICE, "currency": "wei", "unit": "fixed"},
    }
    assert '"price":4768371000000,' in response.text  # json.Number: a bare integer


def test_discovery_units_and_exact_prices(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    """GL server/remote_discovery.go validateRunnerPrice: fixed/seconds/720p-pixel-seconds only."""
    huge = 2**64 + 12345
    control.set_runner(SDXL_RUNNER, unit="seconds", price=huge)
    control.set_runner("bytedance-sdxl-lightning-2", unit="pixel")
    control.set_runner(FLUX_RUNNER, unit="hour")
    control.set_runner("black-forest-labs-flux-1-schnell-2", unit="720p-pixel-seconds", price=7)
    response = caller.http.get(
        f"{base}/signer/discover-orchestrators", headers=bearer(caller.token)
    )
    [orchestrator] = response.json()
    assert [(r["url"].rsplit("/", 2)[-2], r["price_info"]) for r in orchestrator["runners"]] == [
        (SDXL_RUNNER, {"price": huge, "currency": "wei", "unit": "seconds"}),
        (
            "black-forest-labs-flux-1-schnell-2",
            {"price": 7, "currency": "wei", "unit": "720p-pixel-seconds"},
        ),
    ]
    assert f'"price":{huge},' in response.text  # exact digits, never a float

    for runner in (SDXL_RUNNER, "black-forest-labs-flux-1-schnell-2"):
        control.set_runner(runner, unit="per-pixel")
    empty = caller.http.get(f"{base}/signer/discover-orchestrators", headers=bearer(caller.token))
    assert_go_json(empty, 503, "Service Unavailable Error")  # no runner left: cache empty


def test_discovery_503_while_the_cache_is_empty_and_caps_filter(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    """GL server/remote_signer.go GetOrchestrators: 503 "cache empty" (masked), caps = OR."""
    url = f"{base}/signer/discover-orchestrators"
    control.set_config(discoveryEmpty=True)
    assert_go_json(
        caller.http.get(url, headers=bearer(caller.token)), 503, "Service Unavailable Error"
    )
    control.set_config(discoveryEmpty=False)
    by_cap = caller.http.get(
        url, params={"caps": f"image-generation/{FLUX}"}, headers=bearer(caller.token)
    ).json()
    assert len(by_cap) == 1
    assert len(by_cap[0]["runners"]) == 4  # the orchestrator is selected, with all its runners
    none = caller.http.get(url, params={"caps": "text-to-image/x"}, headers=bearer(caller.token))
    assert (none.status_code, none.json()) == (200, [])
