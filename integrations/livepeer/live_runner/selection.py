"""Step 1: choose the runners to try, from the signer's discovery answer.

Keeps single-shot runners of ``image-generation/{model_id}`` whose price we can pay
(``pricing.py``) and whose URL is acceptable: absolute http(s), short enough to
store, and not on a non-public address (``addresses.py``). Runners with free
capacity come first; discovery order is kept otherwise.

The URL called is the runner's published ``…/apps/{runner_id}/app`` **plus a trailing
slash** (and ``LIVEPEER_RUNNER_APP_PATH`` when the app has its own path): go-livepeer
routes ``/apps/{runner_id}/app/{app_path...}``, and Go's ServeMux answers the bare
``…/app`` with a 301 that loses a POST (docs/upstream.md §L5).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from integrations.livepeer.addresses import refused_reason
from integrations.livepeer.errors import (
    LivepeerModelUnavailableError,
    LivepeerProtocolError,
    LivepeerUnavailableError,
)
from integrations.livepeer.live_runner.pricing import Pricing, pricing_for_unit
from integrations.livepeer.schemas import Discovery, RunnerInfo
from integrations.livepeer.types import MAX_RUNNER_URL_CHARS

APP_PREFIX = "image-generation/"
SINGLE_SHOT = "single-shot"


@dataclass(frozen=True)
class Runner:
    """A runner we may pay: where to call it and what one payment costs."""

    url: str  # the app URL we POST to (published URL + "/" + app path)
    published_url: str  # as discovery gave it
    app: str
    price_wei: int
    pricing: Pricing


def app_url(published_url: str, app_path: str = "") -> str:
    """``{published}/`` plus the app's own path (never a bare ``…/app``)."""
    base = published_url.rstrip("/") + "/"
    return base + app_path.lstrip("/")


def _price_wei(info: RunnerInfo) -> int | None:
    price = info.price_info.price if info.price_info is not None else None
    if price is None or price != price.to_integral_value() or price <= 0:
        return None
    if (info.price_info.currency or "wei").strip().lower() != "wei":  # type: ignore[union-attr]
        return None
    return int(price)


def _refusal(info: RunnerInfo, *, allow_private: bool, app_path: str) -> str | Runner:
    """The runner as we will pay it, or why it is refused."""
    if info.price_info is None:
        return "advertises no price"
    pricing = pricing_for_unit(info.price_info.unit)
    if isinstance(pricing, str):
        return pricing
    price_wei = _price_wei(info)
    if price_wei is None:
        return "advertises a price that is not a positive whole number of wei"
    url = app_url(info.url, app_path)
    if len(url) > MAX_RUNNER_URL_CHARS:
        return f"has a URL longer than {MAX_RUNNER_URL_CHARS} characters"
    reason = refused_reason(url, allow_private=allow_private)
    if reason is not None:
        return f"URL {reason}"
    return Runner(
        url=url, published_url=info.url, app=info.app, price_wei=price_wei, pricing=pricing
    )


def select_runners(
    discovery: Discovery,
    model_id: str,
    *,
    request_id: str,
    allow_private: bool,
    app_path: str = "",
) -> list[Runner]:
    """Single-shot runners of ``image-generation/{model_id}`` we can pay, best first."""
    if not discovery.orchestrators:
        raise LivepeerUnavailableError(
            "livepeer discovery returned no orchestrators", request_id=request_id
        )
    app = f"{APP_PREFIX}{model_id}"
    matching = [
        runner
        for orchestrator in discovery.orchestrators
        for runner in orchestrator.runners
        if runner.app == app
    ]
    if not matching:
        raise LivepeerModelUnavailableError(
            f"livepeer: no orchestrator serves {app}", request_id=request_id
        )
    single_shot = [r for r in matching if (r.mode or SINGLE_SHOT).lower() == SINGLE_SHOT]
    if not single_shot:
        raise LivepeerModelUnavailableError(
            f"livepeer: {app} is only served by persistent runners", request_id=request_id
        )
    runners: list[Runner] = []
    refusals: list[str] = []
    seen: set[str] = set()
    # Runners that report no free capacity go last (stable sort keeps discovery order).
    for info in sorted(single_shot, key=lambda r: r.capacity_available == 0):
        outcome = _refusal(info, allow_private=allow_private, app_path=app_path)
        if isinstance(outcome, str):
            host = urlsplit(info.url).hostname or "?"
            refusals.append(f"runner on {host[:100]} {outcome}")
            continue
        if outcome.url not in seen:
            seen.add(outcome.url)
            runners.append(outcome)
    if not runners:
        # Every runner was refused for what it advertises: a clear, terminal error.
        raise LivepeerProtocolError(
            f"livepeer: no runner of {app} can be paid: {'; '.join(refusals[:5])}",
            request_id=request_id,
        )
    return runners
