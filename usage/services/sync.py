"""Mirror pymthouse's metered usage: ``usage_sync_run`` (called by the beat task).

One run (pymthouse-api.md §7.1):

1. take the lease on the sync-state row (a second concurrent run is recorded as
   ``skipped``; a crashed run's lease expires after ``BILLING_USAGE_SYNC_LEASE_SECONDS``);
2. one ``groupBy=user`` call over the window ``[BILLING_USAGE_SYNC_START, now)``; an
   answer identical (sha256) to the one the last successful run applied ends the run here;
3. for each user whose ``(requestCount, networkFeeUsdMicros)`` differs from the mirror,
   one ``groupBy=manifest&userId=<externalUserId>`` call; the users are applied in
   chunks, each chunk in one transaction that inserts its new manifest rows, records
   revisions, joins generations, settles ``outcome_unknown`` holds and updates the
   users' aggregates *together*, so a run killed halfway leaves every user either fully
   applied or still "changed" for the next run;
4. a final transaction advances the watermark to the window end and refreshes totals.

The window starts at a fixed point (all time by default), so every run re-reads what
arrived late (metering lags inference by seconds to minutes): lag needs no special case,
and the cost of a run is bounded by the number of users, not events, because the user
call is an aggregate. Replaying a window changes nothing: rows have natural unique keys
and an unchanged aggregate is never fetched again. Upstream failures (503 metering not
configured, 404 bad credentials, timeouts) are recorded on the state row and in
``UsageSyncRun``; the run changes nothing else and the local ledger keeps working.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from billing.db import WeiSum, server_side_binding, values_in
from billing.models import LedgerEntry
from billing.rates import rate_observe_metered
from billing.selectors import generations_with_usage_charge_pending
from billing.transactions import deadlock_retrying
from inference.metering_bulk import generations_cost_record_staged
from inference.selectors import (
    generations_by_manifest,
    generations_charged_by_their_run,
    generations_existing,
)
from inference.services.metering import MeteredCost, generations_cost_record
from integrations.pymthouse import (
    MAX_CONCURRENT_REQUESTS,
    PymthouseAuthError,
    PymthouseClient,
    PymthouseError,
    PymthouseTimeoutError,
    PymthouseUnavailableError,
    UsageByManifest,
    get_client,
)
from usage.models import (
    UsageDay,
    UsageDrift,
    UsageManifest,
    UsageManifestRevision,
    UsageQuarantine,
    UsageSyncRun,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)
from usage.services.appwide import AppWideStage, app_wide_stage
from usage.services.bulk import (
    STAGE,
    index_joins,
    manifests_insert,
    manifests_insert_staged,
    manifests_stage,
    model_upsert,
)
from usage.services.bulk import Row as ManifestValues
from usage.services.ledger import (
    LocalDebits,
    expected_charge_days,
    local_usage_debits,
    settle_from_usage,
)
from usage.services.plan import (
    AggregateRow,
    ChunkPlan,
    DayDelta,
    LocalUser,
    ManifestLike,
    MeteredDay,
    NewManifest,
    Poison,
    Settlement,
    StoredAggregate,
    StoredManifest,
    chunk_plan,
    drift_figures,
    manifest_rows_screen,
    new_manifest_ids,
    users_screen,
)

logger = logging.getLogger(__name__)

MAX_UINT256 = 2**256 - 1
_DEBIT_SLACK = timedelta(minutes=10)


@dataclass
class _Progress:
    users_seen: int = 0
    users_changed: int = 0
    users_applied: int = 0
    manifests_new: int = 0
    revisions_new: int = 0
    settled: int = 0
    quarantined: int = 0
    http_calls: int = 0
    users_app_wide: int = 0
    fingerprint: str = ""
    drift_alerts: list[tuple[str, date, int]] = field(default_factory=list)


def _status_for(exc: PymthouseError) -> UsageSyncStatus:
    if isinstance(exc, PymthouseTimeoutError):
        return UsageSyncStatus.TIMEOUT
    if isinstance(exc, PymthouseAuthError):
        return UsageSyncStatus.BAD_CREDENTIALS
    if isinstance(exc, PymthouseUnavailableError) and exc.status == 503:
        return UsageSyncStatus.UNCONFIGURED
    if isinstance(exc, PymthouseUnavailableError):
        return UsageSyncStatus.UNAVAILABLE
    return UsageSyncStatus.ERROR


def usage_sync_state() -> UsageSyncState:
    state, _ = UsageSyncState.objects.get_or_create(pk=UsageSyncState.SINGLETON_ID)
    return state


# --- lease ----------------------------------------------------------------------------


@transaction.atomic
def _lease_acquire(*, now: datetime) -> str | None:
    usage_sync_state()
    state = UsageSyncState.objects.select_for_update().get(pk=UsageSyncState.SINGLETON_ID)
    if state.lease_until is not None and state.lease_until > now:
        return None
    token = uuid.uuid4().hex
    state.lease_token = token
    state.lease_until = now + timedelta(seconds=settings.BILLING_USAGE_SYNC_LEASE_SECONDS)
    state.last_started_at = now
    state.save(update_fields=["lease_token", "lease_until", "last_started_at"])
    return token


def _lease_release(token: str) -> None:
    UsageSyncState.objects.filter(pk=UsageSyncState.SINGLETON_ID, lease_token=token).update(
        lease_token="", lease_until=None
    )


# --- the run --------------------------------------------------------------------------


def usage_sync_run(
    *, client: PymthouseClient | None = None, now: datetime | None = None
) -> UsageSyncRun:
    """One sync run; returns its ``UsageSyncRun`` record (never raises for upstream faults)."""
    started = now or timezone.now()
    clock = time.monotonic()
    window_start: datetime | None = settings.BILLING_USAGE_SYNC_START
    run = UsageSyncRun(started_at=started, window_start=window_start, window_end=started)
    token = _lease_acquire(now=started)
    if token is None:
        run.status = UsageSyncStatus.SKIPPED
        run.detail = "another sync run holds the lease"
        run.finished_at = timezone.now()
        run.save()
        logger.info("usage sync skipped: another run holds the lease")
        return run
    progress = _Progress()
    try:
        with server_side_binding():
            status, detail = _sync(
                client=client or get_client(),
                window_start=window_start,
                window_end=started,
                progress=progress,
            )
    except PymthouseError as exc:
        status, detail = _status_for(exc), str(exc)[:300]
        if progress.users_applied:
            detail = f"after {progress.users_applied} users: {detail}"[:300]
        logger.warning("usage sync stopped: %s (%s)", status.label, detail)
    finally:
        _lease_release(token)
    run.status = status
    run.detail = detail
    run.users_seen = progress.users_seen
    run.users_changed = progress.users_changed
    run.manifests_new = progress.manifests_new
    run.revisions_new = progress.revisions_new
    run.settled = progress.settled
    run.quarantined = progress.quarantined
    run.finished_at = timezone.now()
    run.duration_ms = min(int((time.monotonic() - clock) * 1000), 2**31 - 1)
    _record_outcome(
        run=run,
        succeeded=status == UsageSyncStatus.OK,
        fingerprint=progress.fingerprint,
    )
    return run


@transaction.atomic
def _record_outcome(*, run: UsageSyncRun, succeeded: bool, fingerprint: str) -> None:
    run.save()
    state = UsageSyncState.objects.select_for_update().get(pk=UsageSyncState.SINGLETON_ID)
    state.status = run.status
    state.detail = run.detail
    state.last_finished_at = run.finished_at
    fields = ["status", "detail", "last_finished_at"]
    if succeeded:
        assert run.window_end is not None
        state.last_success_at = run.finished_at
        if state.watermark is None or run.window_end > state.watermark:
            state.watermark = run.window_end
        state.upstream_fingerprint = fingerprint
        fields += ["last_success_at", "watermark", "upstream_fingerprint"]
    if run.users_changed or run.revisions_new or state.user_count == 0:
        _refresh_totals(state)
        fields += [
            "user_count",
            "request_count",
            "network_fee_usd_micros",
            "fee_wei",
            "flagged_revisions",
        ]
    state.drift_alerts = UsageDrift.objects.filter(alert=True).count()
    state.quarantined = UsageQuarantine.objects.count()
    fields += ["drift_alerts", "quarantined"]
    state.save(update_fields=fields)


def _exact_sum(values: Iterable[int | None]) -> int:
    """Exact sum, saturated at 2**256-1 (more wei than exists; logged, never a crash)."""
    total = sum(value or 0 for value in values)
    if total > MAX_UINT256:
        logger.error("usage total exceeds 2**256-1 wei; stored as 2**256-1")
        return MAX_UINT256
    return total


def _refresh_totals(state: UsageSyncState) -> None:
    """Totals over the mirror, summed exactly on both databases (``WeiSum``)."""
    sums = UsageUserAggregate.objects.aggregate(
        users=Count("id"),
        requests=Sum("request_count"),
        usd=WeiSum("network_fee_usd_micros"),
        wei=WeiSum("fee_wei"),
    )
    state.user_count = sums["users"]
    state.request_count = int(sums["requests"] or 0)
    state.network_fee_usd_micros = _exact_sum([sums["usd"]])
    state.fee_wei = _exact_sum([sums["wei"]])
    state.flagged_revisions = UsageManifest.objects.filter(flagged=True).count()


def _sync(
    *,
    client: PymthouseClient,
    window_start: datetime | None,
    window_end: datetime,
    progress: _Progress,
) -> tuple[UsageSyncStatus, str]:
    answer = client.usage_by_user(start=window_start, end=window_end).by_user
    progress.users_seen = len(answer)
    progress.fingerprint = _fingerprint(answer, window_start)
    applied = UsageSyncState.objects.values_list("upstream_fingerprint", flat=True).get(
        pk=UsageSyncState.SINGLETON_ID
    )
    if progress.fingerprint == applied:
        _refresh_local_drift(now=window_end, progress=progress)
        _log_drift_alerts(progress)
        return UsageSyncStatus.OK, f"{progress.users_seen} users, unchanged"
    # A user row the columns cannot hold (or the id rule refuses) is quarantined here;
    # every other user is applied.
    upstream, poison = users_screen(answer)
    del answer
    progress.quarantined += quarantine_write(poison, now=window_end)
    stored = {
        ext: (requests, usd)
        for ext, requests, usd in UsageUserAggregate.objects.values_list(
            "external_user_id", "request_count", "network_fee_usd_micros"
        ).iterator(chunk_size=10_000)
    }
    changed = [ext for ext, value in upstream.items() if stored.get(ext) != value]
    # Users the mirror has never applied: read app-wide when there are many of them.
    fresh = [ext for ext in changed if ext not in stored]
    del stored
    progress.users_changed = len(changed)
    progress.http_calls = 1
    # The app-wide users come from staged rows (no per-user call to overlap with), so
    # their chunks are larger: fewer transactions and statements, memory bounded by one
    # chunk of staged rows.
    chunk_size = settings.BILLING_USAGE_SYNC_APP_WIDE_CHUNK
    stage: AppWideStage | None = None
    if fresh and len(fresh) >= settings.BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS:
        stage = app_wide_stage(
            client=client,
            fresh=fresh,
            upstream=upstream,
            user_pk=_user_pks(set(fresh)),
            chunk_size=chunk_size,
            start=window_start,
            end=window_end,
        )
        progress.http_calls += stage.calls
        progress.users_app_wide = len(stage.explained)
        fresh_set = set(fresh)
        changed = fresh + [ext for ext in changed if ext not in fresh_set]
    try:
        _apply_changed(
            client=client,
            changed=changed,
            stage=stage,
            fresh_chunks=-(-len(fresh) // chunk_size) if stage else 0,
            fresh_chunk_size=chunk_size,
            upstream=upstream,
            window_start=window_start,
            window_end=window_end,
            progress=progress,
        )
    finally:
        if stage is not None:
            stage.close()
    _refresh_local_drift(now=window_end, progress=progress)
    _log_drift_alerts(progress)
    detail = (
        f"{progress.users_seen} users, {progress.users_changed} changed, "
        f"{progress.manifests_new} new manifest rows, {progress.revisions_new} revisions, "
        f"{progress.http_calls} calls"
    )
    if stage is not None:
        detail += f" ({stage.windows} day windows; {progress.users_app_wide} users from them)"
    if progress.quarantined:
        detail += f", {progress.quarantined} rows quarantined"
    return UsageSyncStatus.OK, detail


def _user_pks(externals: set[str]) -> dict[str, int]:
    return {
        ext: pk
        for ext, pk in get_user_model()
        .objects.exclude(external_user_id="")
        .values_list("external_user_id", "id")
        .iterator(chunk_size=10_000)
        if ext in externals
    }


def _apply_changed(
    *,
    client: PymthouseClient,
    changed: list[str],
    stage: AppWideStage | None,
    fresh_chunks: int,
    fresh_chunk_size: int,
    upstream: dict[str, tuple[int, int]],
    window_start: datetime | None,
    window_end: datetime,
    progress: _Progress,
) -> None:
    """Apply the changed users in chunks. The first ``fresh_chunks`` chunks are the app-wide
    stage's (same order, ``fresh_chunk_size`` users); there a user the stage explained is
    taken from it, every other user is read with ``groupBy=manifest&userId=``."""
    chunk_size = settings.BILLING_USAGE_SYNC_CHUNK
    workers = min(max(1, settings.BILLING_USAGE_SYNC_CONCURRENCY), MAX_CONCURRENT_REQUESTS)
    explained = stage.explained if stage is not None else set()

    def fetch(ext: str) -> tuple[str, Sequence[UsageByManifest]]:
        rows = client.usage(group_by="manifest", user_id=ext, start=window_start, end=window_end)
        return ext, rows.by_manifest

    fresh = changed[: fresh_chunks * fresh_chunk_size] if fresh_chunks else []
    rest = changed[len(fresh) :]
    chunks = [
        fresh[start : start + fresh_chunk_size] for start in range(0, len(fresh), fresh_chunk_size)
    ]
    chunks += [rest[start : start + chunk_size] for start in range(0, len(rest), chunk_size)]

    def submit(chunk: list[str]) -> list[Future[tuple[str, Sequence[UsageByManifest]]]]:
        return [pool.submit(fetch, ext) for ext in chunk if ext not in explained]

    # The worker threads only talk HTTP (through the one client, whose connection pool is
    # sized for them); every database write stays in this thread, one transaction per
    # chunk. The next chunk is fetched while this one is applied: at most two chunks of
    # answers are held in memory.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = submit(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            current = pending
            try:
                fetched: dict[str, Sequence[ManifestLike]] = dict(
                    future.result() for future in current
                )
            except BaseException:
                for future in current:
                    future.cancel()
                raise
            progress.http_calls += len(current)
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
            joined: dict[tuple[int, str], tuple[uuid.UUID, date]] = {}
            if stage is not None and index < fresh_chunks:
                staged, joined = stage.chunk_rows(index)
                fetched.update(staged)
            try:
                deadlock_retrying(
                    partial(
                        _apply_chunk_counted,
                        fetched=fetched,
                        joined=joined,
                        upstream=upstream,
                        now=window_end,
                        progress=progress,
                    ),
                    what="usage sync chunk",
                )
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            progress.users_applied += len(chunk)


def _fingerprint(upstream: dict[str, tuple[int, int]], window_start: datetime | None) -> str:
    digest = hashlib.sha256(f"{window_start.isoformat() if window_start else ''}\n".encode())
    for ext in sorted(upstream):
        requests, usd = upstream[ext]
        digest.update(f"{ext}\t{requests}\t{usd}\n".encode())
    return digest.hexdigest()


def _log_drift_alerts(progress: _Progress) -> None:
    for ext, day, loss in progress.drift_alerts[:20]:
        logger.warning(
            "usage drift alert: %s on %s metered %s wei more than the ledger debited",
            ext,
            day.isoformat(),
            loss,
        )
    if len(progress.drift_alerts) > 20:
        logger.warning("usage drift alerts: %d more", len(progress.drift_alerts) - 20)


# --- one chunk of changed users -------------------------------------------------------


def _apply_chunk_counted(
    *,
    fetched: dict[str, Sequence[ManifestLike]],
    joined: dict[tuple[int, str], tuple[uuid.UUID, date]],
    upstream: dict[str, tuple[int, int]],
    now: datetime,
    progress: _Progress,
) -> None:
    """``_apply_chunk``, counted into ``progress`` only once its transaction committed
    (a chunk re-run after a lost deadlock is not counted twice)."""
    scratch = replace(progress, drift_alerts=list(progress.drift_alerts))
    _apply_chunk(fetched=fetched, joined=joined, upstream=upstream, now=now, progress=scratch)
    progress.__dict__.update(scratch.__dict__)


@transaction.atomic
def _apply_chunk(
    *,
    fetched: dict[str, Sequence[ManifestLike]],
    joined: dict[tuple[int, str], tuple[uuid.UUID, date]],
    upstream: dict[str, tuple[int, int]],
    now: datetime,
    progress: _Progress,
) -> None:
    """One chunk of changed users, in one transaction: read, plan (pure), write.

    ``joined`` is the generation join the app-wide stage already made for its users'
    rows; the rows of users read with ``userId`` are joined here."""
    externals = list(fetched)
    # One array parameter (``values_in``) joined by probing the (external_user_id, …)
    # indexes (``index_joins``): otherwise PostgreSQL reads the whole mirror table once per
    # chunk (a first full sync: chunks × rows; its statistics lag the growing table).
    with index_joins():
        users = {
            ext: LocalUser(pk=pk, email=email or "")
            for ext, pk, email in get_user_model()
            .objects.filter(external_user_id__in=values_in(externals))
            .values_list("external_user_id", "id", "email")
        }
        existing = {
            (row.external_user_id, row.manifest_id): StoredManifest(
                pk=row.pk,
                fee_wei=row.fee_wei or 0,
                network_fee_usd_micros=row.network_fee_usd_micros or 0,
                day=row.day,
            )
            for row in UsageManifest.objects.filter(external_user_id__in=values_in(externals)).only(
                "id", "external_user_id", "manifest_id", "fee_wei", "network_fee_usd_micros", "day"
            )
        }
        previous = {
            ext: StoredAggregate(request_count=requests, last_used_at=last_used)
            for ext, requests, last_used in UsageUserAggregate.objects.filter(
                external_user_id__in=values_in(externals)
            ).values_list("external_user_id", "request_count", "last_used_at")
        }
    rows, _ = manifest_rows_screen(fetched)
    staged = {pk for pk, _ in joined}  # users whose rows the app-wide stage joined
    generations = generations_by_manifest(
        manifest_ids=new_manifest_ids(
            {key: row for key, row in rows.items() if _pk(users, key[0]) not in staged},
            existing,
        ),
        owner_ids={user.pk for user in users.values() if user.pk not in staged},
    )
    generations.update(joined)
    plan = chunk_plan(
        fetched=fetched,
        upstream=upstream,
        users=users,
        existing=existing,
        previous=previous,
        generations=generations,
        now=now,
    )
    _manifests_write(plan, now=now)
    progress.revisions_new += _revisions_write(plan, now=now)
    progress.manifests_new += len(plan.inserts)
    progress.quarantined += quarantine_write(plan.quarantine, now=now)
    _days_write(plan.days)
    _metered_rate_record(plan.inserts, now=now)
    progress.settled += _settlements_write(plan.settlements)
    _aggregates_write(plan.aggregates, now=now)
    if plan.drift:
        _write_drift(
            pairs=set(plan.drift),
            metered=plan.drift,
            user_ids={ext: user.pk for ext, user in users.items()},
            now=now,
            progress=progress,
        )


def _pk(users: dict[str, LocalUser], ext: str) -> int | None:
    user = users.get(ext)
    return user.pk if user else None


def _manifests_write(plan: ChunkPlan, *, now: datetime) -> None:
    """New manifest rows. A generation deleted while its paid outcome was unknown is
    joined (and settled) through its admission record; its row is gone, so the manifest
    names no generation (on PostgreSQL the insert's own join decides).

    PostgreSQL: the rows are staged first and the joined generations' metered cost is
    recorded from the staging table (rows locked in id order, then one ``UPDATE … FROM``)
    before the insert, so the insert's foreign-key checks find those rows already locked
    by this transaction; ``_settlements_write`` then only settles."""
    if not plan.inserts:
        return
    if connection.vendor == "postgresql":
        manifests_stage(_manifest_values(plan, now=now, present=None))
        with index_joins():
            if plan.settlements:
                generations_cost_record_staged(table=STAGE)
        manifests_insert_staged()
        return
    joined = {new.generation_id for new in plan.inserts if new.generation_id is not None}
    present = generations_existing(generation_ids=joined) if joined else set()
    manifests_insert(list(_manifest_values(plan, now=now, present=present)))


def _manifest_values(
    plan: ChunkPlan, *, now: datetime, present: set[uuid.UUID] | None
) -> Iterator[ManifestValues]:
    """The new rows as ``usage.services.bulk.COLUMNS`` values; with ``present``, a
    generation id not in it is written as NULL."""
    return (
        (
            new.external_user_id,
            new.manifest_id,
            new.user_id,
            new.generation_id if present is None or new.generation_id in present else None,
            new.fee_wei,
            new.network_fee_usd_micros,
            new.pipeline,
            new.model_id,
            new.day,
            now,
            False,
        )
        for new in plan.inserts
    )


def _revisions_write(plan: ChunkPlan, *, now: datetime) -> int:
    """Record revisions (once per amount) and flag their manifests; returns how many new."""
    if not plan.revisions:
        return 0
    flagged = plan.flagged
    before = UsageManifestRevision.objects.filter(manifest_id__in=flagged).count()
    UsageManifestRevision.objects.bulk_create(
        [
            UsageManifestRevision(
                manifest_id=revision.manifest_pk,
                fee_wei=revision.fee_wei,
                network_fee_usd_micros=revision.network_fee_usd_micros,
                seen_at=now,
            )
            for revision in plan.revisions
        ],
        ignore_conflicts=True,
    )
    UsageManifest.objects.filter(pk__in=flagged, flagged=False).update(flagged=True)
    return UsageManifestRevision.objects.filter(manifest_id__in=flagged).count() - before


@transaction.atomic
def quarantine_write(poison: Sequence[Poison], *, now: datetime) -> int:
    """Keep poison rows (raw) for staff; a row seen again is counted, not duplicated."""
    if not poison:
        return 0
    by_key = {_quarantine_key(row): row for row in poison}
    seen = set(UsageQuarantine.objects.filter(key__in=list(by_key)).values_list("key", flat=True))
    UsageQuarantine.objects.filter(key__in=seen).update(
        last_seen_at=now, times_seen=F("times_seen") + 1
    )
    UsageQuarantine.objects.bulk_create(
        [
            UsageQuarantine(
                key=key,
                kind=row.kind,
                external_user_id=row.external_user_id,
                manifest_id=row.manifest_id,
                reason=row.reason[:300],
                raw=row.raw,
                first_seen_at=now,
                last_seen_at=now,
            )
            for key, row in by_key.items()
            if key not in seen
        ],
        ignore_conflicts=True,
    )
    for row in poison[:20]:
        logger.warning(
            "usage row quarantined (%s): %s for %r", row.kind, row.reason, row.external_user_id
        )
    return len(by_key)


def _quarantine_key(row: Poison) -> str:
    return hashlib.sha256(f"{row.kind}\n{row.raw}".encode()).hexdigest()


def _days_write(days: dict[date, DayDelta]) -> None:
    """Add new rows to their day's totals (exact; row-locked against a concurrent run)."""
    if not days:
        return
    UsageDay.objects.bulk_create([UsageDay(day=day) for day in days], ignore_conflicts=True)
    for row in UsageDay.objects.select_for_update().filter(day__in=list(days)).order_by("day"):
        delta = days[row.day]
        row.fee_wei = _exact_sum([row.fee_wei, delta.fee_wei])
        row.network_fee_usd_micros = _exact_sum(
            [row.network_fee_usd_micros, delta.network_fee_usd_micros]
        )
        row.manifest_count += delta.manifest_count
        row.save(update_fields=["fee_wei", "network_fee_usd_micros", "manifest_count"])


def _metered_rate_record(inserts: Sequence[NewManifest], *, now: datetime) -> None:
    """Hand billing the ETH/USD rate pymthouse metered the chunk's largest new payment at
    (its exact USD micros over its wei): while fresh, fees are converted at it."""
    priced = [new for new in inserts if new.fee_wei > 0 and new.network_fee_usd_exact_micros]
    if not priced:
        return
    largest = max(priced, key=lambda new: (new.fee_wei, new.manifest_id))
    assert largest.network_fee_usd_exact_micros is not None
    rate_observe_metered(
        fee_wei=largest.fee_wei,
        usd_micros_exact=largest.network_fee_usd_exact_micros,
        usage_ref=f"manifest:{largest.manifest_id}",
        observed_at=now,
    )


def _settlements_write(settlements: Sequence[Settlement]) -> int:
    """Joined generations: record the metered cost; settle holds kept by outcome_unknown.

    Lock order, as in a paid image's charge: the generation rows first (all of them, in
    id order), then the accounts (in id order); returns how many holds were settled. A
    generation whose attempt is still running with a confirmed payment is left to that
    attempt (``generations_charged_by_their_run``).
    """
    if not settlements:
        return 0
    if connection.vendor != "postgresql":
        # PostgreSQL: recorded from the staged rows by ``_manifests_write`` (the
        # settlements are exactly its rows that name a generation, same amounts).
        generations_cost_record(
            costs={
                settlement.generation_id: MeteredCost(
                    fee_wei=settlement.fee_wei,
                    network_fee_usd_micros=settlement.network_fee_usd_micros,
                )
                for settlement in settlements
            }
        )
    settled = 0
    joined = {settlement.generation_id for settlement in settlements}
    # A generation still running with a confirmed payment is charged by its own worker
    # right after the paid call, at the runner's fee: not here (read under the row locks
    # taken just above, so that worker's charge is either committed, and the ledger
    # shows it, or waits for this chunk).
    pending = generations_with_usage_charge_pending(
        generation_ids=joined
    ) - generations_charged_by_their_run(generation_ids=joined)
    for settlement in settlements:
        if settlement.generation_id in pending and settle_from_usage(
            user_id=settlement.user_id,
            generation_id=settlement.generation_id,
            fee_wei=settlement.fee_wei,
            usage_ref=settlement.usage_ref,
            usd_micros_exact=settlement.network_fee_usd_exact_micros,
        ):
            settled += 1
    return settled


_AGGREGATE_UPDATE = (
    "user_id",
    "request_count",
    "network_fee_usd_micros",
    "fee_wei",
    "manifest_count",
    "last_used_at",
    "synced_at",
    "email",
    "search_user",
    "search_email",
)
_DRIFT_UPDATE = (
    "local_debit_wei",
    "metered_fee_wei",
    "local_usd_micros",
    "metered_usd_micros",
    "fee_diff_wei",
    "rate_diff_usd_micros",
    "alert",
    "computed_at",
)


def _aggregates_write(aggregates: Sequence[AggregateRow], *, now: datetime) -> None:
    model_upsert(
        model=UsageUserAggregate,
        rows=[
            {
                "external_user_id": row.external_user_id,
                "user_id": row.user_id,
                "request_count": row.request_count,
                "network_fee_usd_micros": row.network_fee_usd_micros,
                "fee_wei": row.fee_wei,
                "manifest_count": row.manifest_count,
                "last_used_at": row.last_used_at,
                "synced_at": now,
                "email": row.email,
                "search_user": row.external_user_id.lower(),
                "search_email": row.email.lower(),
            }
            for row in aggregates
        ],
        conflict=("external_user_id",),
        update=_AGGREGATE_UPDATE,
    )


# --- drift ----------------------------------------------------------------------------


def _write_drift(
    *,
    pairs: set[tuple[str, date]],
    metered: dict[tuple[str, date], MeteredDay],
    user_ids: dict[str, int],
    now: datetime,
    progress: _Progress,
    local: dict[tuple[str, date], LocalDebits] | None = None,
) -> None:
    since = min(day for _, day in pairs)
    if local is None:
        local = local_usage_debits(
            user_ids={ext: user_ids[ext] for ext, _ in pairs if ext in user_ids}, since=since
        )
    expected = expected_charge_days(
        external_user_ids={ext for ext, _ in pairs},
        since=since,
        until=max(day for _, day in pairs),
    )
    threshold = settings.BILLING_DRIFT_ALERT_WEI
    rows = []
    for ext, day in pairs:
        debits = local.get((ext, day), LocalDebits())
        figures = drift_figures(
            local_wei=debits.wei,
            local_usd_exact=debits.usd_micros_exact,
            metered=metered.get((ext, day), MeteredDay()),
            charge_expected=(ext, day) in expected,
            alert_wei=threshold,
        )
        if figures.alert:
            progress.drift_alerts.append((ext, day, figures.fee_diff_wei))
        rows.append(
            {
                "external_user_id": ext,
                "day": day,
                "local_debit_wei": figures.local_debit_wei,
                "metered_fee_wei": figures.metered_fee_wei,
                "local_usd_micros": figures.local_usd_micros,
                "metered_usd_micros": figures.metered_usd_micros,
                "fee_diff_wei": figures.fee_diff_wei,
                "rate_diff_usd_micros": figures.rate_diff_usd_micros,
                "alert": figures.alert,
                "computed_at": now,
            }
        )
    model_upsert(
        model=UsageDrift, rows=rows, conflict=("external_user_id", "day"), update=_DRIFT_UPDATE
    )


@transaction.atomic
def _refresh_local_drift(*, now: datetime, progress: _Progress) -> None:
    """Recent days with new local debits: refresh their drift even if nothing was metered.

    Only pairs that gained a debit since shortly before the start of the last successful
    run (the watermark) are re-checked; ``_DEBIT_SLACK`` covers debits stamped before that
    moment by transactions that committed after the run read them.
    """
    since = now.date() - timedelta(days=settings.BILLING_DRIFT_DAYS)
    state = UsageSyncState.objects.get(pk=UsageSyncState.SINGLETON_ID)
    watermark = state.watermark
    # Cheap probe (primary-key index): the highest ledger entry id. Ids are not assigned in
    # commit order, so "unchanged" alone could hide an entry whose transaction was still
    # open when the mark was taken. Such an entry commits within ``_DEBIT_SLACK`` of its
    # created_at (the assumption the re-check already makes), so the re-check is skipped
    # only once the last successful run started at least ``_DEBIT_SLACK`` after the mark
    # was taken: the first run after any such commit still re-checks and finds it.
    probed_at = timezone.now()
    mark = LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first()
    if (
        state.ledger_mark_at is not None
        and mark == state.ledger_mark_id
        and watermark is not None
        and watermark >= state.ledger_mark_at + _DEBIT_SLACK
    ):
        return
    if state.ledger_mark_at is None or mark != state.ledger_mark_id:
        state.ledger_mark_id, state.ledger_mark_at = mark, probed_at
        state.save(update_fields=["ledger_mark_id", "ledger_mark_at"])
    changed_since = watermark - _DEBIT_SLACK if watermark else None
    local = local_usage_debits(user_ids=None, since=since, changed_since=changed_since)
    if not local:
        return
    externals = sorted({ext for ext, _ in local})
    metered: dict[tuple[str, date], MeteredDay] = {}
    for offset in range(0, len(externals), 1000):
        grouped = (
            UsageManifest.objects.filter(
                external_user_id__in=externals[offset : offset + 1000], day__gte=since
            )
            .values_list("external_user_id", "day")
            .annotate(total=WeiSum("fee_wei"), usd=WeiSum("network_fee_usd_micros"))
            .order_by()
        )
        for ext, day, total, usd in grouped:
            metered[(ext, day)] = MeteredDay(fee_wei=int(total or 0), usd_micros=int(usd or 0))
    _write_drift(
        pairs=set(local), metered=metered, user_ids={}, now=now, progress=progress, local=local
    )
