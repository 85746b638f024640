"""The drill's figures, from the database rows, the files on disk and the sandbox's logs.

Tickets come from the sandbox: every ``POST /signer/generate-live-payment`` answered 200
records exactly one usage event (pymthouse's ``create_signed_ticket``) whose
``manifestId`` is the ``ManifestID`` paid for, i.e. the runner challenge's
``manifest_id``, which the client stores on ``Generation.manifest_id`` when it claims the
payment. Events are attributed to generations by that manifest only
(``gatewayRequestId`` is the signer's own random id, docs/upstream.md §L9).

A paid generation (one with a ticket) ends in one of:

* ``succeeded`` with its file: delivered;
* ``failed/outcome_unknown`` (the claim kept, so billing resolves it and it is never
  paid again): counted on its own, **not** as lost;
* ``failed/upstream_failed`` with exactly one ticket (the runner failed after the
  orchestrator took the payment; it cannot be re-sent): counted on its own;
* anything else: **lost**.

"Images lost after payment" = paid generations in that last group + succeeded
generations whose file is missing or empty + delivered images deleted (a generation seen
``succeeded`` with an image during the run that at the end is no longer succeeded with
that image on disk).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.drill.chaos import ActionRecord
from bench.drill.load import Attempt
from inference.failure_codes import FailureCode

SUCCEEDED = "succeeded"
#: Anything else (queued, running, or a state added later) is unfinished.
FINISHED = ("succeeded", "failed", "canceled")
OUTCOME_UNKNOWN = FailureCode.OUTCOME_UNKNOWN.value
UPSTREAM_FAILED = FailureCode.UPSTREAM_FAILED.value


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
    paid_outcome_unknown: int
    outcome_unknown_by_tickets: dict[int, int]
    outcome_unknown_without_claim: list[str]
    paid_upstream_failed: int
    delivered_seen: int
    delivered_deleted: list[str]
    lost_after_payment: list[str]
    succeeded_without_ticket: int
    orphan_files: int
    #: signer payments served 200 whose answer a sandbox fault lost, by kind (stall/drop)
    answers_lost: dict[str, int] = field(default_factory=dict)
    #: generations with a ticket at the sandbox that our client never confirmed
    #: (``tickets_paid`` 0: the answer was lost, or the worker died before reading it)
    paid_unconfirmed_by_end: dict[str, int] = field(default_factory=dict)
    recoveries: list[Recovery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.stuck
            or self.over_one_ticket
            or self.lost_after_payment
            or self.outcome_unknown_without_claim
        )


def _tickets(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> tuple[Counter[str], int]:
    by_manifest = {row["manifest_id"]: str(row["id"]) for row in rows if row["manifest_id"]}
    per_generation: Counter[str] = Counter()
    unattributed = 0
    for event in events:
        if event.get("source") != "signer":
            continue
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
    delivered: dict[str, str],
) -> Figures:
    """``delivered``: generation id → image name, for every generation seen ``succeeded``
    during the run (``run.DeliveryWatcher``)."""
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

    def accounted(row: dict[str, Any]) -> bool:
        """A paid end that is not a loss: outcome unknown, or the runner failed after
        taking the one payment."""
        if row["status"] != "failed":
            return False
        if row["error_code"] == OUTCOME_UNKNOWN:
            return True
        return row["error_code"] == UPSTREAM_FAILED and per_generation[str(row["id"])] == 1

    final = {str(row["id"]): row for row in rows}
    deleted = sorted(
        f"{generation_id} ({image})"
        for generation_id, image in delivered.items()
        if generation_id not in final
        or final[generation_id]["status"] != SUCCEEDED
        or final[generation_id]["image"] != image
        or not _image_ok(media_root, image)
    )
    lost = (
        missing
        + deleted
        + sorted(
            f"{row['id']} ({row['status']}/{row['error_code'] or '-'})"
            for row in paid_not_succeeded
            if not accounted(row)
        )
    )
    outcome_unknown = [
        row for row in rows if row["status"] == "failed" and row["error_code"] == OUTCOME_UNKNOWN
    ]
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
        paid_outcome_unknown=sum(
            1 for row in outcome_unknown if per_generation.get(str(row["id"]), 0)
        ),
        outcome_unknown_by_tickets=dict(
            sorted(
                Counter(per_generation.get(str(row["id"]), 0) for row in outcome_unknown).items()
            )
        ),
        outcome_unknown_without_claim=sorted(
            str(row["id"]) for row in outcome_unknown if row["payment_claimed_at"] is None
        ),
        paid_upstream_failed=sum(
            1
            for row in paid_not_succeeded
            if row["status"] == "failed" and row["error_code"] == UPSTREAM_FAILED
        ),
        delivered_seen=len(delivered),
        delivered_deleted=deleted,
        lost_after_payment=lost,
        succeeded_without_ticket=sum(
            1
            for row in rows
            if row["status"] == SUCCEEDED and not per_generation.get(str(row["id"]), 0)
        ),
        orphan_files=len(on_disk - referenced),
        recoveries=_recoveries(records, attempts, rows),
        answers_lost=dict(
            sorted(
                Counter(
                    str(entry["answerLost"])
                    for entry in payment_requests
                    if entry.get("answerLost") and entry["status"] == 200
                ).items()
            )
        ),
        paid_unconfirmed_by_end=dict(
            Counter(
                f"{row['status']}/{row['error_code'] or '-'}"
                for row in rows
                if per_generation.get(str(row["id"]), 0) and not row.get("tickets_paid")
            ).most_common()
        ),
    )
