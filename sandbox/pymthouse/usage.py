"""Builder usage, balance and identities (docs/upstream.md §P6).

Basic M2M only; every auth or tenant failure is ``404 {"error":"Not found"}``. Only
events older than the configured usage lag are visible, like OpenMeter after the
Kafka collector. Money: ``*UsdMicros`` are integer strings, ``feeWei`` a decimal string,
``networkFeeUsdExact`` USD micros with up to 12 fraction digits (``"29999996.338176"``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.money import format_exact_usd_micros
from sandbox.pymthouse import usage_seed
from sandbox.state import SandboxState, UsageEvent, iso_millis
from sandbox.web import get_state, json_response, parse_authorization, secret_matches

logger = logging.getLogger(__name__)

OPENMETER_ABSENT = "OpenMeter not configured (OPENMETER_URL required)"
OPENMETER_ABSENT_BALANCE = "OpenMeter not configured"  # transcript 7e/7f: shorter message
MAX_IDENTITY_RANGE = timedelta(days=365)


def _not_found() -> Response:
    return json_response({"error": "Not found"}, 404)


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _basic_m2m_for_path(state: SandboxState, request: Request) -> bool:
    settings = state.settings
    credentials = parse_authorization(request)
    return (
        credentials.scheme == "basic"
        and request.path_params["app"] == settings.app_id
        and credentials.client_id == settings.m2m_client_id
        and secret_matches(credentials.client_secret, settings.m2m_client_secret)
    )


def parse_date(text: str) -> datetime | None:
    """ISO 8601 date or date-time (``Z``/offsets accepted; naive values are UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _in_range(event: UsageEvent, start: datetime | None, end: datetime | None) -> bool:
    """Start inclusive, end exclusive (OpenMeter ``from``/``to``)."""
    moment = event.time
    return (start is None or moment >= start) and (end is None or moment < end)


def _fee(events: Iterable[UsageEvent]) -> int:
    return sum(event.usd_micros for event in events)


def _group(
    events: list[UsageEvent], key: Callable[[UsageEvent], tuple[str, ...]]
) -> dict[tuple[str, ...], list[UsageEvent]]:
    groups: dict[tuple[str, ...], list[UsageEvent]] = {}
    for event in events:
        groups.setdefault(key(event), []).append(event)
    return groups


async def usage(request: Request) -> Response:
    state = get_state(request)
    if not _basic_m2m_for_path(state, request):
        return _not_found()
    if not state.config.open_meter_enabled:
        return _error(503, OPENMETER_ABSENT)
    query = request.query_params
    start_text, end_text = query.get("startDate") or None, query.get("endDate") or None
    start = end = None
    if start_text is not None and (start := parse_date(start_text)) is None:
        return _error(400, "Invalid startDate format")
    if end_text is not None and (end := parse_date(end_text)) is None:
        return _error(400, "Invalid endDate format")
    group_by = query.get("groupBy") or "none"
    user_id = query.get("userId") or None
    if group_by == "daily_pipeline" and user_id is None:
        return _error(400, "userId is required when groupBy=daily_pipeline")

    events = [
        event
        for event in state.visible_events()
        if _in_range(event, start, end) and (user_id is None or event.external_user_id == user_id)
    ]
    # Bulk-seeded usage (control API) is kept pre-aggregated; see usage_seed.py.
    cutoff = usage_seed.visibility_cutoff(state)
    seeded = usage_seed.user_totals(state, start, end, user_id, cutoff)
    seeded_count = sum(requests for requests, _ in seeded.values())
    total = str(_fee(events) + sum(micros for _, micros in seeded.values()))
    body: dict[str, Any] = {
        "clientId": state.settings.app_id,
        "source": "openmeter",
        "period": {"start": start_text, "end": end_text},
        "totals": {
            "requestCount": len(events) + seeded_count,
            "currency": "USD",
            "networkFeeUsdMicros": total,
            "ownerChargeUsdMicros": total,
            "platformFeeUsdMicros": "0",
        },
    }
    if group_by == "user":
        per_user = {
            key[0]: (len(group), _fee(group))
            for key, group in _group(events, lambda event: (event.external_user_id,)).items()
        }
        for external_user_id, (requests, micros) in seeded.items():
            had = per_user.get(external_user_id, (0, 0))
            per_user[external_user_id] = (had[0] + requests, had[1] + micros)
        if user_id is not None and not per_user:
            per_user = {
                user_id: (0, 0)
            }  # usage-read.ts aggregateUserRows: a zero row for the filter
        body["byUser"] = [
            {
                "endUserId": external_user_id,
                "externalUserId": external_user_id,
                "userType": "system_managed",
                "identifier": external_user_id,
                "currency": "USD",
                "networkFeeUsdMicros": str(micros),
                "ownerChargeUsdMicros": str(micros),
                "requestCount": requests,
            }
            for external_user_id, (requests, micros) in sorted(per_user.items())
        ]
    elif group_by == "pipeline_model":
        body["byPipelineModel"] = [
            {
                "pipeline": pipeline,
                "modelId": model_id,
                "currency": "USD",
                "requestCount": len(group),
                "networkFeeUsdMicros": str(_fee(group)),
                "ownerChargeUsdMicros": str(_fee(group)),
            }
            for (pipeline, model_id), group in sorted(
                _group(events, lambda event: (event.pipeline, event.model_id)).items()
            )
        ]
    elif group_by == "daily_pipeline":
        body["byDailyPipeline"] = [
            {
                "pipeline": pipeline,
                "modelId": model_id,
                "date": date,
                "requestCount": len(group),
                "currency": "USD",
                "networkFeeUsdMicros": str(_fee(group)),
                "ownerChargeUsdMicros": str(_fee(group)),
            }
            for (date, pipeline, model_id), group in sorted(
                _group(
                    events,
                    lambda event: (event.time.date().isoformat(), event.pipeline, event.model_id),
                ).items()
            )
        ]
    elif group_by == "manifest":
        body["byManifest"] = _manifest_rows(
            events, usage_seed.manifest_parts(state, start, end, user_id, cutoff)
        )
    return json_response(body)


def _manifest_rows(
    events: list[UsageEvent], seeded: Iterable[usage_seed.ManifestPart]
) -> list[dict[str, Any]]:
    """``byManifest[]`` as pymthouse's ``aggregateManifestRows`` builds it
    (pymthouse/pymthouse@5ee7cfc7 src/lib/openmeter/usage-read.ts): one row per
    ``manifestId`` over everything the filter lets through, so without ``userId`` the rows
    of every user of the app are merged by manifest id (the rows carry no user id);
    ``pipeline``/``modelId`` come from the first meter row seen for the manifest."""
    parts: dict[str, list[Any]] = {}
    for event in events:
        _add_part(parts, event.manifest_id, event.fee_wei, event.usd_micros_exact, event)
    for part in seeded:
        _add_part(parts, part.manifest_id, part.fee_wei, Fraction(part.usd_micros), part)
    return [
        _manifest_row(manifest_id, fee_wei, exact, meta.pipeline, meta.model_id)
        for manifest_id, (fee_wei, exact, meta) in parts.items()
    ]


def _add_part(
    parts: dict[str, list[Any]], manifest_id: str, fee_wei: int, exact: Fraction, meta: Any
) -> None:
    seen = parts.get(manifest_id)
    if seen is None:
        parts[manifest_id] = [fee_wei, exact, meta]
    else:
        seen[0] += fee_wei
        seen[1] += exact


def _manifest_row(
    manifest_id: str, fee_wei: int, exact: Fraction, pipeline: str, model_id: str
) -> dict[str, Any]:
    # As pymthouse's usage-read.ts: both figures come from the manifest's summed exact
    # micros, networkFeeUsdMicros = ceil(sum) (ceilExactUsdMicrosSum) and
    # networkFeeUsdExact = that sum in micros (formatExactUsdMicros), so a manifest with
    # several events can total less than the sum of its per-event ceilings.
    micros = str(max(math.ceil(exact), 0))
    return {
        "manifestId": manifest_id,
        "currency": "USD",
        "networkFeeUsdMicros": micros,
        "networkFeeUsdExact": format_exact_usd_micros(exact),
        "ownerChargeUsdMicros": micros,
        "feeWei": str(fee_wei),
        "billableSecs": "0",
        "pipeline": pipeline,
        "modelId": model_id,
    }


async def balance(request: Request) -> Response:
    """§7.2. Balances are live (not delayed by the usage lag): the signer debits at once."""
    state = get_state(request)
    if not _basic_m2m_for_path(state, request):
        return _not_found()
    if not state.config.open_meter_enabled:
        return _error(503, OPENMETER_ABSENT_BALANCE)
    external_user_id = request.query_params.get("externalUserId") or ""
    if not external_user_id.strip():
        return _error(400, "externalUserId is required")
    user = state.find_user(external_user_id)
    spendable = user.balance_usd_micros if user else 0
    granted = user.lifetime_granted_usd_micros if user else 0
    consumed = state.consumed_usd_micros(user) if user else 0
    return json_response(
        {
            "externalUserId": external_user_id,
            "balanceUsdMicros": str(spendable),
            "remainingUsdMicros": str(spendable),
            "lifetimeGrantedUsdMicros": str(granted),
            "consumedUsdMicros": str(consumed),
            "hasAccess": spendable > 0,
        }
    )


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (start + timedelta(days=32)).replace(day=1)
    return start, next_month


async def identities(request: Request) -> Response:
    """§7.4: provisioned and metered identities for a window (default: this UTC month)."""
    state = get_state(request)
    if not _basic_m2m_for_path(state, request):
        return _not_found()
    if not state.config.open_meter_enabled:
        return _error(503, OPENMETER_ABSENT)
    default_start, default_end = _month_bounds(datetime.now(UTC))
    start_text = request.query_params.get("startDate") or None
    end_text = request.query_params.get("endDate") or None
    start = parse_date(start_text) if start_text else default_start
    end = parse_date(end_text) if end_text else default_end
    if start is None or end is None or start > end or end - start > MAX_IDENTITY_RANGE:
        return _error(400, "Invalid date range")

    metered = _group(
        [event for event in state.visible_events() if _in_range(event, start, end)],
        lambda event: (event.external_user_id,),
    )
    rows = []
    for external_user_id in dict.fromkeys([*state.users, *(key[0] for key in metered)]):
        user = state.find_user(external_user_id)
        events = metered.get((external_user_id,), [])
        rows.append(
            {
                "externalUserId": external_user_id,
                "appUserId": user.id if user else None,
                "label": external_user_id,
                "email": user.email if user else None,
                "status": user.status if user else "unprovisioned",
                "provisioned": user is not None,
                "apiKey": None,
                "apiKeyCount": 0,
                "requestCount": len(events),
                "networkFeeUsdMicros": str(_fee(events)),
                "billableSecs": "0",
                "lastActiveDate": (
                    max(event.time for event in events).date().isoformat() if events else None
                ),
                "createdAt": iso_millis(user.created_at) if user else None,
            }
        )
    rows.sort(key=lambda row: (-int(str(row["networkFeeUsdMicros"])), str(row["externalUserId"])))
    return json_response(
        {
            "appId": state.settings.app_id,
            "appName": "Sandbox App",
            "cycle": {"start": iso_millis(start), "end": iso_millis(end)},
            "identities": rows,
        }
    )


routes = [
    Route("/api/v1/builder/apps/{app}/usage", usage, methods=["GET"]),
    Route("/api/v1/apps/{app}/usage", usage, methods=["GET"]),
    Route("/api/v1/builder/apps/{app}/usage/balance", balance, methods=["GET"]),
    Route("/api/v1/apps/{app}/usage/balance", balance, methods=["GET"]),
    Route("/api/v1/apps/{app}/identities", identities, methods=["GET"]),
]
