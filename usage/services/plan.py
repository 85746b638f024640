"""What one chunk of the usage sync changes, decided without a database.

``usage.services.sync`` reads what the mirror holds for a chunk of users, calls
``chunk_plan`` (pure: plain values in, plain values out) and hands the plan to small
writers. Everything the sync decides is here, so it is unit-tested without a database
(``tests/usage/test_plan.py``):

- which manifest rows are new (inserted), which were seen before with another amount
  (a revision, flagged, never applied), which repeat what is stored (nothing);
- which rows are poison and go to quarantine instead (kept raw, shown to staff): a row
  the columns cannot hold, or a manifest listed twice in one answer with different
  amounts (a conflict: ambiguous, so never inserted and never charged);
- which joined generations record a metered cost and settle an unknown outcome, in the
  one lock order (generation rows, then accounts in id order);
- the users' aggregates, the per-day deltas and the (user, day) pairs whose drift changes;
- each (user, day)'s drift figures (``drift_figures``): the fee and rate differences, and
  whether it is an alert.

``users_screen`` does the same for the ``groupBy=user`` answer before any manifest is
fetched: a user row the id rule refuses or the columns cannot hold is quarantined and
that user is not fetched; every other user goes on.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction

from integrations.pymthouse import ManifestRow, UsageByManifest, validate_external_user_id

MAX_BIGINT = 2**63 - 1
MAX_UINT256 = 2**256 - 1
#: What a signed drift column holds (``billing.fields.SignedAmountField``).
SIGNED_MAX = 10**80 - 1
#: Column sizes of the mirror (``usage.models``).
EXTERNAL_USER_ID_MAX = 128
MANIFEST_ID_MAX = 200
PIPELINE_MAX = 100
MODEL_ID_MAX = 200


#: A ``byManifest[]`` row as either read gives it (a model per row, or the bulk read's).
ManifestLike = UsageByManifest | ManifestRow


class PoisonKind:
    USER_ROW = "user_row"
    MANIFEST_ROW = "manifest_row"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Poison:
    """A row kept out of the mirror: what was received, and why."""

    kind: str
    external_user_id: str
    manifest_id: str
    reason: str
    raw: str


@dataclass(frozen=True)
class StoredManifest:
    pk: int
    fee_wei: int
    network_fee_usd_micros: int
    day: date


@dataclass(frozen=True)
class StoredAggregate:
    request_count: int
    last_used_at: datetime | None


@dataclass(frozen=True)
class LocalUser:
    pk: int
    email: str


@dataclass(frozen=True)
class NewManifest:
    external_user_id: str
    manifest_id: str
    user_id: int | None
    generation_id: uuid.UUID | None
    fee_wei: int
    network_fee_usd_micros: int
    pipeline: str
    model_id: str
    day: date
    #: pymthouse's exact USD micros for the manifest (``networkFeeUsdExact``), if sent.
    network_fee_usd_exact_micros: Fraction | None = None


@dataclass(frozen=True)
class Revision:
    manifest_pk: int
    fee_wei: int
    network_fee_usd_micros: int


@dataclass(frozen=True)
class Settlement:
    """A new row joined to a generation: its metered cost, and a settle of its hold."""

    user_id: int
    generation_id: uuid.UUID
    fee_wei: int
    network_fee_usd_micros: int
    usage_ref: str
    network_fee_usd_exact_micros: Fraction | None = None


@dataclass(frozen=True)
class AggregateRow:
    external_user_id: str
    user_id: int | None
    request_count: int
    network_fee_usd_micros: int
    fee_wei: int
    manifest_count: int
    last_used_at: datetime | None
    email: str


@dataclass(frozen=True)
class DayDelta:
    fee_wei: int = 0
    network_fee_usd_micros: int = 0
    manifest_count: int = 0


@dataclass(frozen=True)
class MeteredDay:
    """What pymthouse metered for one (user, day): Σ ``feeWei``, Σ ``networkFeeUsdMicros``."""

    fee_wei: int = 0
    usd_micros: int = 0


@dataclass(frozen=True)
class DriftFigures:
    """One (user, day) of drift, exact integers (see ``drift_figures``)."""

    local_debit_wei: int
    local_usd_micros: int
    metered_fee_wei: int
    metered_usd_micros: int
    fee_diff_wei: int
    rate_diff_usd_micros: int
    alert: bool


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def drift_figures(
    *,
    local_wei: int,
    local_usd_exact: Fraction,
    metered: MeteredDay,
    charge_expected: bool,
    alert_wei: int,
) -> DriftFigures:
    """Split what pymthouse metered vs what our charges recorded into a fee difference
    (the network charged other wei) and a rate difference (the same wei converted at
    pymthouse's rate instead of ours). No float; each USD figure is rounded up once.

    - ``local_usd_micros = ⌈Σ network_fee_wei × eth_usd_rate⌉`` (``local_usd_exact``);
    - ``fee_diff_wei = metered_wei − local_wei``;
    - our rate ``r = local_usd_exact / local_wei`` (USD micros per wei; the debits' own
      rates, weighted by wei), and
      ``rate_diff_usd_micros = metered_usd − ⌈metered_wei × r⌉``, i.e. exactly
      ``metered_usd − local_usd − fee_diff × r`` rounded once. With nothing debited there
      is no rate of ours: the whole difference is a fee difference (rate diff 0 for the
      metered wei; a metered USD with no metered wei stays a rate difference).

    ``alert``: a charge was expected that day (an image admitted with a hold) and the
    metered wei exceeds our debits' by more than ``alert_wei``. A metered fee on a day
    with no hold is an image on a plan that includes images: the operator's cost, shown,
    not an alert.
    """
    local_wei = exact_sum([local_wei])
    metered_wei = exact_sum([metered.fee_wei])
    metered_usd = exact_sum([metered.usd_micros])
    fee_diff = metered_wei - local_wei
    if local_wei:
        ours = _ceil(Fraction(metered_wei) * local_usd_exact / local_wei)
        rate_diff = max(-SIGNED_MAX, min(metered_usd - ours, SIGNED_MAX))
    else:
        rate_diff = 0 if metered_wei else metered_usd
    return DriftFigures(
        local_debit_wei=local_wei,
        local_usd_micros=min(_ceil(local_usd_exact), MAX_UINT256),
        metered_fee_wei=metered_wei,
        metered_usd_micros=metered_usd,
        fee_diff_wei=fee_diff,
        rate_diff_usd_micros=rate_diff,
        alert=charge_expected and fee_diff > alert_wei,
    )


@dataclass
class ChunkPlan:
    inserts: list[NewManifest] = field(default_factory=list)
    revisions: list[Revision] = field(default_factory=list)
    quarantine: list[Poison] = field(default_factory=list)
    #: In lock order: by account (user id), then generation id.
    settlements: list[Settlement] = field(default_factory=list)
    aggregates: list[AggregateRow] = field(default_factory=list)
    days: dict[date, DayDelta] = field(default_factory=dict)
    #: ``(externalUserId, day) -> metered wei and USD micros`` of the accepted rows, for
    #: the pairs that gained a row in this chunk (their drift is rewritten).
    drift: dict[tuple[str, date], MeteredDay] = field(default_factory=dict)

    @property
    def flagged(self) -> set[int]:
        return {revision.manifest_pk for revision in self.revisions}


def exact_sum(values: Iterable[int | None]) -> int:
    """Exact sum, saturated at 2**256-1 (more wei than exists; never a crash)."""
    total = sum(value or 0 for value in values)
    return min(total, MAX_UINT256)


def _raw_user(ext: str, requests: int, usd: int) -> str:
    return json.dumps(
        {"externalUserId": ext, "requestCount": str(requests), "networkFeeUsdMicros": str(usd)}
    )


def _raw_manifest(ext: str, row: ManifestLike) -> str:
    return json.dumps(
        {
            "externalUserId": ext,
            "manifestId": row.manifest_id,
            "feeWei": str(row.fee_wei),
            "networkFeeUsdMicros": str(row.network_fee_usd_micros),
            "pipeline": row.pipeline,
            "modelId": row.model_id,
        }
    )


def users_screen(
    upstream: Mapping[str, tuple[int, int]],
) -> tuple[dict[str, tuple[int, int]], list[Poison]]:
    """Split the ``groupBy=user`` answer into users to apply and quarantined rows."""
    accepted: dict[str, tuple[int, int]] = {}
    poison: list[Poison] = []
    for ext, (requests, usd) in upstream.items():
        reason = ""
        try:
            validate_external_user_id(ext)
        except ValueError as exc:
            reason = f"externalUserId refused: {exc}"
        if not reason and len(ext) > EXTERNAL_USER_ID_MAX:
            reason = f"externalUserId longer than {EXTERNAL_USER_ID_MAX} characters"
        if not reason and not 0 <= requests <= MAX_BIGINT:
            reason = "requestCount does not fit a 64-bit column"
        if not reason and not 0 <= usd <= MAX_UINT256:
            reason = "networkFeeUsdMicros exceeds 2**256-1"
        if reason:
            poison.append(
                Poison(
                    kind=PoisonKind.USER_ROW,
                    external_user_id=ext,
                    manifest_id="",
                    reason=reason,
                    raw=_raw_user(ext, requests, usd),
                )
            )
        else:
            accepted[ext] = (requests, usd)
    return accepted, poison


def _manifest_row_problem(row: ManifestLike) -> str:
    if not row.manifest_id:
        return "manifestId is empty"
    if len(row.manifest_id) > MANIFEST_ID_MAX:
        return f"manifestId longer than {MANIFEST_ID_MAX} characters"
    if not 0 <= row.fee_wei <= MAX_UINT256:
        return "feeWei exceeds 2**256-1"
    if not 0 <= row.network_fee_usd_micros <= MAX_UINT256:
        return "networkFeeUsdMicros exceeds 2**256-1"
    return ""


def manifest_rows_screen(
    fetched: Mapping[str, Sequence[ManifestLike]],
) -> tuple[dict[tuple[str, str], ManifestLike], list[Poison]]:
    """One row per ``(externalUserId, manifestId)``, and the rows quarantined instead.

    A manifest listed more than once with the same amounts is one row. Listed with
    different amounts it is a conflict: every variant is quarantined, none is applied.
    """
    rows: dict[tuple[str, str], ManifestLike] = {}
    conflicts: dict[tuple[str, str], list[ManifestLike]] = {}
    poison: list[Poison] = []
    for ext, answer in fetched.items():
        for row in answer:
            problem = _manifest_row_problem(row)
            if problem:
                poison.append(
                    Poison(
                        kind=PoisonKind.MANIFEST_ROW,
                        external_user_id=ext,
                        manifest_id=row.manifest_id,
                        reason=problem,
                        raw=_raw_manifest(ext, row),
                    )
                )
                continue
            key = (ext, row.manifest_id)
            if key in conflicts:
                conflicts[key].append(row)
                continue
            seen = rows.get(key)
            if seen is None:
                rows[key] = row
            elif (seen.fee_wei, seen.network_fee_usd_micros) != (
                row.fee_wei,
                row.network_fee_usd_micros,
            ):
                conflicts[key] = [rows.pop(key), row]
    for (ext, manifest_id), variants in conflicts.items():
        amounts = sorted({(row.fee_wei, row.network_fee_usd_micros) for row in variants})
        reason = f"listed {len(variants)} times with {len(amounts)} different amounts"
        for row in variants:
            poison.append(
                Poison(
                    kind=PoisonKind.CONFLICT,
                    external_user_id=ext,
                    manifest_id=manifest_id,
                    reason=reason,
                    raw=_raw_manifest(ext, row),
                )
            )
    return rows, poison


def new_manifest_ids(
    rows: Mapping[tuple[str, str], ManifestLike],
    existing: Mapping[tuple[str, str], StoredManifest],
) -> set[str]:
    """Manifest ids of the rows the mirror does not hold yet (the generation join's input)."""
    return {manifest_id for (ext, manifest_id) in rows if (ext, manifest_id) not in existing}


def chunk_plan(
    *,
    fetched: Mapping[str, Sequence[ManifestLike]],
    upstream: Mapping[str, tuple[int, int]],
    users: Mapping[str, LocalUser],
    existing: Mapping[tuple[str, str], StoredManifest],
    previous: Mapping[str, StoredAggregate],
    generations: Mapping[tuple[int, str], tuple[uuid.UUID, date]],
    now: datetime,
) -> ChunkPlan:
    """Everything one chunk of changed users changes in the mirror (no I/O)."""
    plan = ChunkPlan()
    rows, plan.quarantine = manifest_rows_screen(fetched)
    today = now.date()
    for (ext, manifest_id), row in rows.items():
        old = existing.get((ext, manifest_id))
        if old is not None:
            if (old.fee_wei, old.network_fee_usd_micros) != (
                row.fee_wei,
                row.network_fee_usd_micros,
            ):
                plan.revisions.append(
                    Revision(
                        manifest_pk=old.pk,
                        fee_wei=row.fee_wei,
                        network_fee_usd_micros=row.network_fee_usd_micros,
                    )
                )
            continue
        user = users.get(ext)
        generation = generations.get((user.pk, manifest_id)) if user else None
        plan.inserts.append(
            NewManifest(
                external_user_id=ext,
                manifest_id=manifest_id,
                user_id=user.pk if user else None,
                generation_id=generation[0] if generation else None,
                fee_wei=row.fee_wei,
                network_fee_usd_micros=row.network_fee_usd_micros,
                pipeline=(row.pipeline or "")[:PIPELINE_MAX],
                model_id=(row.model_id or "")[:MODEL_ID_MAX],
                day=generation[1] if generation else today,
                network_fee_usd_exact_micros=row.network_fee_usd_exact_micros,
            )
        )

    plan.settlements = sorted(
        (
            Settlement(
                user_id=new.user_id,
                generation_id=new.generation_id,
                fee_wei=new.fee_wei,
                network_fee_usd_micros=new.network_fee_usd_micros,
                usage_ref=f"manifest:{new.manifest_id}",
                network_fee_usd_exact_micros=new.network_fee_usd_exact_micros,
            )
            for new in plan.inserts
            if new.generation_id is not None and new.user_id is not None
        ),
        key=lambda settlement: (settlement.user_id, str(settlement.generation_id)),
    )

    days: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for new in plan.inserts:
        delta = days[new.day]
        delta[0] += new.fee_wei
        delta[1] += new.network_fee_usd_micros
        delta[2] += 1
    plan.days = {
        day: DayDelta(fee_wei=fee, network_fee_usd_micros=usd, manifest_count=count)
        for day, (fee, usd, count) in sorted(days.items())
    }

    # Per-user rollups over the accepted rows (first amounts; revisions wait for staff).
    accepted: dict[str, list[tuple[int, date, int]]] = defaultdict(list)
    for (ext, _), old in existing.items():
        accepted[ext].append((old.fee_wei, old.day, old.network_fee_usd_micros))
    for new in plan.inserts:
        accepted[new.external_user_id].append((new.fee_wei, new.day, new.network_fee_usd_micros))
    for ext in fetched:
        requests, usd = upstream[ext]
        before = previous.get(ext)
        grew = before is None or requests > before.request_count
        user = users.get(ext)
        plan.aggregates.append(
            AggregateRow(
                external_user_id=ext,
                user_id=user.pk if user else None,
                request_count=requests,
                network_fee_usd_micros=usd,
                fee_wei=exact_sum(fee for fee, _, _ in accepted[ext]),
                manifest_count=len(accepted[ext]),
                last_used_at=now if grew else before.last_used_at if before else None,
                email=user.email if user else "",
            )
        )

    touched = {(new.external_user_id, new.day) for new in plan.inserts}
    metered: dict[tuple[str, date], list[int]] = {pair: [0, 0] for pair in touched}
    for ext, fees in accepted.items():
        for fee, day, usd in fees:
            if (ext, day) in touched:
                metered[(ext, day)][0] += fee
                metered[(ext, day)][1] += usd
    plan.drift = {
        pair: MeteredDay(fee_wei=exact_sum([wei]), usd_micros=exact_sum([usd]))
        for pair, (wei, usd) in metered.items()
    }
    return plan
