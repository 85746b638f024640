"""The app-wide pass of a first full sync: every manifest of the app in day windows.

pymthouse's ``groupBy=manifest`` without ``userId`` answers every manifest of the app,
one row per manifest id, with no user id on the rows (``pymthouse/pymthouse@5ee7cfc7
src/lib/openmeter/usage-read.ts`` ``aggregateManifestRows``; docs/upstream.md P6.1). For
many users new to the mirror, one such call per UTC day replaces one call per user:

1. each day window is streamed (``PymthouseClient.usage_manifests``) and its rows are
   attributed by manifest id to the one generation holding it
   (``inference.selectors.generations_by_manifest_app``), so to its owner; a row that no
   generation of a user being staged holds is dropped here;
2. the attributed rows are spilled to a temporary file per chunk of users (pickled
   batches), so memory is bounded by a window and a chunk, not by the app's history;
3. a user is *explained* when the exact USD micros of their attributed rows, summed
   over every window and rounded up once, equal their ``groupBy=user`` total (pymthouse
   rounds the same sum up once per read). Only explained users are applied from the
   staged rows; every other user (a manifest that joins no generation of theirs, a
   manifest shared with another user, a rounding difference) is read again with
   ``groupBy=manifest&userId=`` by the sync, exactly as before.

Windows: from ``BILLING_USAGE_SYNC_START``'s day, or, with no start configured, walking
back a day at a time from the window end until a ``groupBy=none`` read of everything
before the next window says there is nothing there.

A manifest whose events straddle midnight is listed in two windows with a part each: the
parts are summed (wei and exact micros; ``networkFeeUsdMicros`` is then the ceiling of
the summed exact micros, as pymthouse computes it for a single read). Two rows for one
manifest in the *same* window are left to ``manifest_rows_screen`` (same amounts: one
row; different amounts: a conflict, quarantined).
"""

from __future__ import annotations

import pickle
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from inference.selectors import generations_by_manifest_app
from integrations.pymthouse import ManifestRow, PymthouseClient

#: Rows attributed per query batch of a window (one join query each).
BATCH = 5000
#: Exact micros are summed as integers of 10**-12 micros (pymthouse sends at most 12
#: fraction digits), so a user's sum over a million rows stays exact and cheap.
_PICO = 10**12
#: The walk back through days with no configured start stops here whatever happens.
MAX_DAYS = 3660

#: A staged row: window index, manifest id, fee wei, USD micros, exact micros as
#: (numerator, denominator) or None, pipeline, model id, generation id, day.
_Staged = tuple[int, str, int, int, tuple[int, int] | None, str | None, str | None, uuid.UUID, date]


@dataclass
class AppWideStage:
    """What the app-wide pass found: per user, where their rows are and whether the rows
    explain their totals. ``close`` removes the spill files."""

    chunk_of: dict[str, int]
    user_pk: dict[str, int]
    directory: tempfile.TemporaryDirectory[str]
    explained: set[str] = field(default_factory=set)
    windows: int = 0
    calls: int = 0
    rows_read: int = 0
    rows_attributed: int = 0
    _files: dict[int, IO[bytes]] = field(default_factory=dict)

    def _path(self, chunk: int) -> Path:
        return Path(self.directory.name) / f"chunk-{chunk:06d}.pickle"

    def spill(self, by_chunk: dict[int, list[tuple[str, _Staged]]]) -> None:
        for chunk, rows in by_chunk.items():
            handle = self._files.get(chunk)
            if handle is None:
                handle = self._files[chunk] = self._path(chunk).open("ab")
            pickle.dump(rows, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def finish_writing(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def chunk_rows(
        self, chunk: int
    ) -> tuple[dict[str, list[ManifestRow]], dict[tuple[int, str], tuple[uuid.UUID, date]]]:
        """The explained users' rows of one chunk (parts of a manifest merged), and the
        generation join for them (``(owner id, manifest id) -> (generation id, day)``)."""
        path = self._path(chunk)
        parts: dict[str, dict[str, list[_Staged]]] = defaultdict(lambda: defaultdict(list))
        if path.exists():
            with path.open("rb") as handle:
                for rows in _pickled(handle):
                    for ext, staged in rows:
                        if ext in self.explained:
                            parts[ext][staged[1]].append(staged)
        fetched: dict[str, list[ManifestRow]] = {}
        joined: dict[tuple[int, str], tuple[uuid.UUID, date]] = {}
        for ext, manifests in parts.items():
            rows_out: list[ManifestRow] = []
            for manifest_id, pieces in manifests.items():
                rows_out += _merged(pieces)
                joined[(self.user_pk[ext], manifest_id)] = (pieces[0][7], pieces[0][8])
            fetched[ext] = rows_out
        return fetched, joined

    def close(self) -> None:
        self.finish_writing()
        self.directory.cleanup()


def _pickled(handle: IO[bytes]) -> Iterator[list[tuple[str, _Staged]]]:
    while True:
        try:
            yield pickle.load(handle)  # noqa: S301 (our own spill file, written above)
        except EOFError:
            return


def _exact(row: ManifestRow) -> Fraction:
    if row.network_fee_usd_exact_micros is not None:
        return row.network_fee_usd_exact_micros
    return Fraction(row.network_fee_usd_micros)


def _row(staged: _Staged, *, fee_wei: int, usd: int, exact: Fraction | None) -> ManifestRow:
    return ManifestRow(
        manifest_id=staged[1],
        network_fee_usd_micros=usd,
        fee_wei=fee_wei,
        network_fee_usd_exact_micros=exact,
        pipeline=staged[5],
        model_id=staged[6],
    )


def _merged(pieces: list[_Staged]) -> list[ManifestRow]:
    """One row for a manifest's parts from distinct windows; same-window repeats as is."""
    if len(pieces) > 1 and len({piece[0] for piece in pieces}) != len(pieces):
        return [
            _row(
                piece,
                fee_wei=piece[2],
                usd=piece[3],
                exact=Fraction(*piece[4]) if piece[4] else None,
            )
            for piece in pieces
        ]
    if len(pieces) == 1:
        piece = pieces[0]
        return [
            _row(
                piece,
                fee_wei=piece[2],
                usd=piece[3],
                exact=Fraction(*piece[4]) if piece[4] else None,
            )
        ]
    if all(piece[4] is not None for piece in pieces):
        exact = sum((Fraction(*piece[4]) for piece in pieces if piece[4]), Fraction(0))
        usd = max(-((-exact.numerator) // exact.denominator), 0)
        merged_exact: Fraction | None = exact
    else:
        usd, merged_exact = sum(piece[3] for piece in pieces), None
    return [_row(pieces[0], fee_wei=sum(piece[2] for piece in pieces), usd=usd, exact=merged_exact)]


def _day_windows(
    client: PymthouseClient, *, start: datetime | None, end: datetime, stage: AppWideStage
) -> Iterator[tuple[datetime, datetime]]:
    """Day windows newest first, ``[max(day, start), min(day + 1, end))``."""
    day = datetime.combine(end.astimezone(UTC).date(), time(), tzinfo=UTC)
    for _ in range(MAX_DAYS):
        window_start = day if start is None or day > start else start
        yield window_start, min(day + timedelta(days=1), end)
        if start is not None and window_start <= start:
            return
        if start is None:
            stage.calls += 1
            before = client.usage(group_by="none", end=day).totals
            if before.request_count == 0 and before.network_fee_usd_micros == 0:
                return
        day -= timedelta(days=1)


def app_wide_stage(
    *,
    client: PymthouseClient,
    fresh: Sequence[str],
    upstream: dict[str, tuple[int, int]],
    user_pk: dict[str, int],
    chunk_size: int,
    start: datetime | None,
    end: datetime,
) -> AppWideStage:
    """Read every manifest of the app in day windows and stage the rows of ``fresh``
    users (in the order given: chunk ``i`` is ``fresh[i*chunk_size:(i+1)*chunk_size]``)."""
    stage = AppWideStage(
        chunk_of={ext: index // chunk_size for index, ext in enumerate(fresh)},
        user_pk=user_pk,
        directory=tempfile.TemporaryDirectory(prefix="usage-sync-"),
    )
    owner_ext = {pk: ext for ext, pk in user_pk.items() if ext in stage.chunk_of}
    pico: dict[str, int] = defaultdict(int)
    try:
        for window, (window_start, window_end) in enumerate(
            _day_windows(client, start=start, end=end, stage=stage)
        ):
            stage.windows += 1
            stage.calls += 1
            with client.usage_manifests(start=window_start, end=window_end) as rows:
                batch: list[ManifestRow] = []
                for row in rows:
                    batch.append(row)
                    if len(batch) >= BATCH:
                        _attribute(stage, window, batch, owner_ext, pico)
                        batch = []
                _attribute(stage, window, batch, owner_ext, pico)
        stage.finish_writing()
        for ext in stage.chunk_of:
            total = pico.get(ext)
            if total is not None and -((-total) // _PICO) == upstream[ext][1]:
                stage.explained.add(ext)
    except BaseException:
        stage.close()
        raise
    return stage


def _attribute(
    stage: AppWideStage,
    window: int,
    batch: list[ManifestRow],
    owner_ext: dict[int, str],
    pico: dict[str, int],
) -> None:
    if not batch:
        return
    stage.rows_read += len(batch)
    joined = generations_by_manifest_app(
        manifest_ids=[row.manifest_id for row in batch], owner_ids=owner_ext
    )
    by_chunk: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for row in batch:
        match = joined.get(row.manifest_id)
        if match is None:
            continue
        owner_id, generation_id, day = match
        ext = owner_ext[owner_id]
        exact = _exact(row)
        if _PICO % exact.denominator:  # finer than pymthouse writes: never "explained"
            pico[ext] += 1 - _PICO * 2**200
        else:
            pico[ext] += exact.numerator * (_PICO // exact.denominator)
        by_chunk[stage.chunk_of[ext]].append(
            (
                ext,
                (
                    window,
                    row.manifest_id,
                    row.fee_wei,
                    row.network_fee_usd_micros,
                    None
                    if row.network_fee_usd_exact_micros is None
                    else (exact.numerator, exact.denominator),
                    row.pipeline,
                    row.model_id,
                    generation_id,
                    day,
                ),
            )
        )
        stage.rows_attributed += 1
    stage.spill(by_chunk)
