"""The drill's figures, from the database rows, the files on disk and the sandbox's logs.

Tickets come from the sandbox: every ``POST /signer/generate-live-payment`` answered 200
records exactly one usage event carrying the ``gatewayRequestId`` (= generation id) and
``ManifestID`` the client sent; events are attributed by the id, else by the manifest.
"Images lost after payment" counts a succeeded generation whose file is missing or empty,
and a generation with a ticket that did not succeed and is not ``outcome_unknown``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.drill.chaos import ActionRecord
from bench.drill.load import Attempt

SUCCEEDED = "succeeded"
#: Anything else (queued, running, or a state added later) is unfinished.
FINISHED = ("succeeded", "failed", "canceled")
OUTCOME_UNKNOWN = "outcome_unknown"


@dataclass
class Recovery:
    label: str
    started: datetime
    back_up: datetime
    first_accepted: float | None  # seconds from back_up to the first API 201
    first_succeeded: float | None  # seconds from back_up to the first success submitted after
    refused: int  # API attempts without a 201 between the fault and the first 201 after it


@dataclass
class Figures:
    submitted_rows: int
    api_accepted: int
    unconfirmed_rows: int  # rows whose POST never got a 201 (the client saw an error)
    api_refused_attempts: int
    api_refusals: dict[str, int]
    abandoned_indexes: int
    status: dict[str, int]
    failed_by_code: dict[str, int]
    stuck: int
    stuck_detail: list[str]
    tickets_total: int
    payment_200s: int
    tickets_per_generation: dict[int, int]
    over_one_ticket: list[str]
    unattributed_tickets: int
    succeeded_missing_file: list[str]
    paid_not_succeeded_by_code: dict[str, int]
    lost_after_payment: list[str]
    succeeded_without_ticket: int
    orphan_files: int
    recoveries: list[Recovery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.stuck or self.over_one_ticket or self.lost_after_payment)


def _tickets(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> tuple[Counter[str], int]:
    ids = {str(row["id"]) for row in rows}
    by_manifest = {row["manifest_id"]: str(row["id"]) for row in rows if row["manifest_id"]}
    per_generation: Counter[str] = Counter()
    unattributed = 0
    for event in events:
        if event.get("source") != "signer":
            continue
        generation_id = event.get("gatewayRequestId")
        if generation_id not in ids:
            generation_id = by_manifest.get(event.get("manifestId") or "")
        if generation_id is None:
            unattributed += 1
        else:
            per_generation[generation_id] += 1
    return per_generation, unattributed


def _recoveries(
    records: list[ActionRecord], attempts: list[Attempt], rows: list[dict[str, Any]]
) -> list[Recovery]:
    recoveries = []
    accepted = sorted(attempt.at for attempt in attempts if attempt.status == 201)
    successes = sorted(
        (row["created_at"], row["finished_at"])
        for row in rows
        if row["status"] == SUCCEEDED and row["finished_at"] is not None
    )
    for record in records:
        if record.back_up is None:
            continue
        back_up = record.back_up
        first_accepted = next((at for at in accepted if at >= back_up), None)
        first_succeeded = min(
            (finished for created, finished in successes if created >= back_up), default=None
        )
        limit = first_accepted or back_up
        refused = sum(1 for a in attempts if a.status != 201 and record.started <= a.at <= limit)
        recoveries.append(
            Recovery(
                label=record.description,
                started=record.started,
                back_up=back_up,
                first_accepted=(first_accepted - back_up).total_seconds()
                if first_accepted
                else None,
                first_succeeded=(first_succeeded - back_up).total_seconds()
                if first_succeeded
                else None,
                refused=refused,
            )
        )
    return recoveries


def _image_ok(media_root: Path, name: str) -> bool:
    if not name:
        return False
    path = media_root / name
    return path.is_file() and path.stat().st_size > 0


def tally(
    *,
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    payment_requests: list[dict[str, Any]],
    attempts: list[Attempt],
    abandoned: list[int],
    records: list[ActionRecord],
    media_root: Path,
) -> Figures:
    status = Counter(row["status"] for row in rows)
    failed_by_code = Counter(row["error_code"] or "?" for row in rows if row["status"] == "failed")
    stuck_rows = [row for row in rows if row["status"] not in FINISHED]
    per_generation, unattributed = _tickets(rows, events)
    distribution = Counter(per_generation.get(str(row["id"]), 0) for row in rows)
    over_one = sorted(gid for gid, count in per_generation.items() if count > 1)
    missing = sorted(
        str(row["id"])
        for row in rows
        if row["status"] == SUCCEEDED and not _image_ok(media_root, row["image"])
    )
    paid_not_succeeded = [
        row for row in rows if per_generation.get(str(row["id"]), 0) and row["status"] != SUCCEEDED
    ]
    lost = missing + sorted(
        f"{row['id']} ({row['status']}/{row['error_code'] or '-'})"
        for row in paid_not_succeeded
        if row["error_code"] != OUTCOME_UNKNOWN
    )
    referenced = {row["image"] for row in rows if row["status"] == SUCCEEDED and row["image"]}
    on_disk = {
        str(path.relative_to(media_root))
        for path in (media_root / "generations").rglob("*")
        if path.is_file()
    }
    refusals = Counter(
        str(attempt.status or attempt.error) for attempt in attempts if attempt.status != 201
    )
    return Figures(
        submitted_rows=len(rows),
        api_accepted=sum(1 for attempt in attempts if attempt.status == 201),
        unconfirmed_rows=len(
            {str(row["id"]) for row in rows}
            - {attempt.generation_id for attempt in attempts if attempt.generation_id}
        ),
        api_refused_attempts=sum(refusals.values()),
        api_refusals=dict(refusals.most_common()),
        abandoned_indexes=len(abandoned),
        status=dict(status.most_common()),
        failed_by_code=dict(failed_by_code.most_common()),
        stuck=len(stuck_rows),
        stuck_detail=[
            f"{row['id']} {row['status']}/{row['stage'] or '-'}"
            f" claimed={bool(row['payment_claimed_at'])}"
            for row in stuck_rows
        ],
        tickets_total=sum(per_generation.values()) + unattributed,
        payment_200s=sum(1 for entry in payment_requests if entry["status"] == 200),
        tickets_per_generation=dict(sorted(distribution.items())),
        over_one_ticket=over_one,
        unattributed_tickets=unattributed,
        succeeded_missing_file=missing,
        paid_not_succeeded_by_code=dict(
            Counter(
                f"{row['status']}/{row['error_code'] or '-'}" for row in paid_not_succeeded
            ).most_common()
        ),
        lost_after_payment=lost,
        succeeded_without_ticket=sum(
            1
            for row in rows
            if row["status"] == SUCCEEDED and not per_generation.get(str(row["id"]), 0)
        ),
        orphan_files=len(on_disk - referenced),
        recoveries=_recoveries(records, attempts, rows),
    )
