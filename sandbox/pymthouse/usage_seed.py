"""Bulk-seeded usage: metered rows put in through the control API, served by the usage route.

Signed-ticket events recorded by the signer live in ``SandboxState.events`` and are
grouped on every read, which is fine for the handful a test produces. A benchmark needs
100,000 users and 1,000,000 metered rows, so seeded usage is kept *pre-aggregated*: per
user, one row per manifest plus the user's running totals. The usage route merges these
into its answers (``merge_*`` below); the response shapes stay pymthouse's (§7.1): no
pagination, USD micros as digit strings, ``feeWei`` only on manifest rows.

Control API (loopback only, like the rest of ``/__sandbox/``):

- ``POST /__sandbox/usage/seed`` with ``{"rows": [{"externalUserId", "manifestId",
  "feeWei": "<digits>", "usdMicros": "<digits>", "requests": 1, "pipeline", "modelId",
  "time": <unix seconds>}]}`` adds rows; a row for a manifest already seeded adds to it
  (more tickets on the same session), so a test can make an amount change between reads.
- the same with ``{"generate": {"users", "manifestsPerUser", "feeWei", "usdMicros",
  "prefix", "offset", "time", "days"}}`` generates ``users × manifestsPerUser`` rows in one
  call; with ``days`` > 1, user ``i``'s rows are ``i % days`` UTC days before ``time``
  (spread history for day-windowed reads).
- ``DELETE /__sandbox/usage/seed`` forgets seeded usage (``/__sandbox/reset`` does too).
"""

from __future__ import annotations

import dataclasses
import json
import time
import weakref
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.state import SandboxState
from sandbox.web import get_state, json_response

MAX_SEED_ROWS = 5_000_000
_DIGITS = frozenset("0123456789")


@dataclasses.dataclass
class SeedRow:
    fee_wei: int
    usd_micros: int
    requests: int
    pipeline: str
    model_id: str
    time: float


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestPart:
    """One seeded manifest inside a window, for the usage route to merge by manifest id."""

    manifest_id: str
    fee_wei: int
    usd_micros: int
    pipeline: str
    model_id: str


@dataclasses.dataclass
class SeedUser:
    manifests: dict[str, SeedRow] = dataclasses.field(default_factory=dict)
    requests: int = 0
    usd_micros: int = 0


@dataclasses.dataclass
class SeedStore:
    users: dict[str, SeedUser] = dataclasses.field(default_factory=dict)
    rows: int = 0
    min_time: float = float("inf")
    max_time: float = float("-inf")
    #: UTC day number -> the (user, manifest id) pairs whose row time fell on it when
    #: added (a row whose time later moves is listed on both days; reads check the time).
    by_day: dict[int, list[tuple[SeedUser, str]]] = dataclasses.field(default_factory=dict)

    def add(self, external_user_id: str, manifest_id: str, row: SeedRow) -> None:
        user = self.users.get(external_user_id)
        if user is None:
            user = self.users[external_user_id] = SeedUser()
        existing = user.manifests.get(manifest_id)
        if existing is None:
            user.manifests[manifest_id] = row
            self.rows += 1
            self.by_day.setdefault(_day(row.time), []).append((user, manifest_id))
        else:
            existing.fee_wei += row.fee_wei
            existing.usd_micros += row.usd_micros
            existing.requests += row.requests
            if row.time > existing.time:
                if _day(row.time) != _day(existing.time):
                    self.by_day.setdefault(_day(row.time), []).append((user, manifest_id))
                existing.time = row.time
        user.requests += row.requests
        user.usd_micros += row.usd_micros
        self.min_time = min(self.min_time, row.time)
        self.max_time = max(self.max_time, row.time)


def _day(moment: float) -> int:
    return int(moment // 86400)


_stores: weakref.WeakKeyDictionary[SandboxState, SeedStore] = weakref.WeakKeyDictionary()


def store_for(state: SandboxState) -> SeedStore:
    store = _stores.get(state)
    if store is None:
        store = _stores[state] = SeedStore()
    return store


def clear(state: SandboxState) -> None:
    _stores.pop(state, None)


# --- reads (called by the usage route) ------------------------------------------------


def _visible(row_time: float, start: datetime | None, end: datetime | None, cutoff: float) -> bool:
    return (
        row_time <= cutoff
        and (start is None or row_time >= start.timestamp())
        and (end is None or row_time < end.timestamp())
    )


def _whole_store_visible(
    store: SeedStore, start: datetime | None, end: datetime | None, cutoff: float
) -> bool:
    return _visible(store.min_time, start, end, cutoff) and _visible(
        store.max_time, start, end, cutoff
    )


def user_totals(
    state: SandboxState,
    start: datetime | None,
    end: datetime | None,
    user_id: str | None,
    cutoff: float,
) -> dict[str, tuple[int, int]]:
    """``{externalUserId: (requests, usd_micros)}`` of seeded rows inside the window."""
    store = _stores.get(state)
    if store is None or not store.users:
        return {}
    users = store.users if user_id is None else {user_id: store.users.get(user_id, SeedUser())}
    if _whole_store_visible(store, start, end, cutoff):
        return {
            ext: (user.requests, user.usd_micros) for ext, user in users.items() if user.requests
        }
    totals: dict[str, tuple[int, int]] = {}
    for ext, user in users.items():
        requests = micros = 0
        for row in user.manifests.values():
            if _visible(row.time, start, end, cutoff):
                requests += row.requests
                micros += row.usd_micros
        if requests:
            totals[ext] = (requests, micros)
    return totals


def manifest_parts(
    state: SandboxState,
    start: datetime | None,
    end: datetime | None,
    user_id: str | None,
    cutoff: float,
) -> list[ManifestPart]:
    """Seeded manifests inside the window (one per user and manifest id; the route merges
    equal manifest ids, as pymthouse does). Without ``userId`` only the window's days are
    read (``by_day``), so a day-windowed read of a large store stays cheap."""
    store = _stores.get(state)
    if store is None:
        return []
    pairs: list[tuple[SeedUser, str]]
    if user_id is not None:
        user = store.users.get(user_id)
        pairs = [(user, manifest_id) for manifest_id in user.manifests] if user else []
    else:
        first = _day(start.timestamp()) if start is not None else None
        last = _day(end.timestamp()) if end is not None else None
        pairs = [
            (user, manifest_id)
            for day in sorted(store.by_day)
            if (first is None or day >= first) and (last is None or day <= last)
            for user, manifest_id in store.by_day[day]
            # a row whose time moved to a later day is listed there too: read it once
            if _day(user.manifests[manifest_id].time) == day
        ]
    parts = []
    for user, manifest_id in pairs:
        row = user.manifests[manifest_id]
        if _visible(row.time, start, end, cutoff):
            parts.append(
                ManifestPart(manifest_id, row.fee_wei, row.usd_micros, row.pipeline, row.model_id)
            )
    return parts


def visibility_cutoff(state: SandboxState) -> float:
    return time.time() - state.config.usage_lag_seconds


# --- control API ----------------------------------------------------------------------


class SeedError(ValueError):
    pass


def _digits(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value or not set(value) <= _DIGITS or len(value) > 78:
        raise SeedError(f"{what} must be a string of ASCII digits")
    return int(value)


def _count(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SeedError(f"{what} must be an integer >= {minimum}")
    return value


def _text(value: Any, what: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise SeedError(f"{what} must be a non-empty string")
    return value


def _seed_rows(store: SeedStore, rows: Any, now: float) -> int:
    if not isinstance(rows, list):
        raise SeedError("rows must be a list")
    parsed = []
    for row in rows:
        if not isinstance(row, dict):
            raise SeedError("each row must be an object")
        moment = row.get("time", now)
        if isinstance(moment, bool) or not isinstance(moment, (int, float)):
            raise SeedError("time must be a Unix timestamp")
        parsed.append(
            (
                _text(row.get("externalUserId"), "externalUserId", ""),
                _text(row.get("manifestId"), "manifestId", ""),
                SeedRow(
                    fee_wei=_digits(row.get("feeWei"), "feeWei"),
                    usd_micros=_digits(row.get("usdMicros"), "usdMicros"),
                    requests=_count(row.get("requests", 1), "requests", minimum=1),
                    pipeline=_text(row.get("pipeline"), "pipeline", "text-to-image"),
                    model_id=_text(row.get("modelId"), "modelId", "ByteDance/SDXL-Lightning"),
                    time=float(moment),
                ),
            )
        )
    for external_user_id, manifest_id, seed_row in parsed:
        store.add(external_user_id, manifest_id, seed_row)
    return len(parsed)


def _seed_generated(store: SeedStore, spec: Any, now: float) -> int:
    if not isinstance(spec, dict):
        raise SeedError("generate must be an object")
    users = _count(spec.get("users"), "users", minimum=1)
    per_user = _count(spec.get("manifestsPerUser", 1), "manifestsPerUser", minimum=1)
    offset = _count(spec.get("offset", 0), "offset")
    if store.rows + users * per_user > MAX_SEED_ROWS:
        raise SeedError(f"at most {MAX_SEED_ROWS} seeded rows")
    fee_wei = _digits(spec.get("feeWei", "1000000000000"), "feeWei")
    usd_micros = _digits(spec.get("usdMicros", "3"), "usdMicros")
    prefix = _text(spec.get("prefix"), "prefix", "seed-")
    moment = float(spec.get("time", now))
    days = _count(spec.get("days", 1), "days", minimum=1)
    for index in range(offset, offset + users):
        external_user_id = f"{prefix}{index:07d}"
        when = moment - (index % days) * 86400
        for number in range(per_user):
            store.add(
                external_user_id,
                f"{external_user_id}-m{number:04d}",
                SeedRow(fee_wei, usd_micros, 1, "text-to-image", "ByteDance/SDXL-Lightning", when),
            )
    return users * per_user


async def seed(request: Request) -> Response:
    state = get_state(request)
    if request.method == "DELETE":
        clear(state)
        return json_response({"ok": True})
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return json_response({"error": "invalid JSON"}, 400)
    if not isinstance(body, dict) or not ({"rows", "generate"} & set(body)):
        return json_response({"error": "rows or generate is required"}, 400)
    store = store_for(state)
    now = time.time()
    try:
        added = 0
        if "rows" in body:
            added += _seed_rows(store, body["rows"], now)
        if "generate" in body:
            added += _seed_generated(store, body["generate"], now)
    except SeedError as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response({"added": added, "rows": store.rows, "users": len(store.users)})


routes = [Route("/__sandbox/usage/seed", seed, methods=["POST", "DELETE"])]
