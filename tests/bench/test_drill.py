"""The fault drill's plan and arithmetic (the drill itself is run by ``make drill``)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.drill.__main__ import parse_arguments
from bench.drill.chaos import FAULT_MENU, Action, ActionRecord, make_plan
from bench.drill.load import Attempt
from bench.drill.report import BEGIN, END, write_section
from bench.drill.tally import tally

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _plan(seed: int) -> list[Action]:
    return make_plan(
        seed=seed,
        window=100.0,
        workers=2,
        kills=20,
        redis_restarts=2,
        postgres_drops=1,
        postgres_restarts=1,
        faults=12,
    )


def test_plan_is_fixed_by_the_seed_and_has_every_fault() -> None:
    plan = _plan(7)
    assert plan == _plan(7)
    assert plan != _plan(8)
    kinds = Counter(action.kind for action in plan)
    assert kinds["kill-child"] + kinds["kill-worker"] == 20
    assert kinds["redis-restart"] == 2
    assert kinds["postgres-drop"] == 1
    assert kinds["postgres-restart"] == 1
    assert kinds["fault"] == 12
    assert [action.at for action in plan] == sorted(action.at for action in plan)
    assert all(0 < action.at < 100 for action in plan)
    outages = sorted(
        a.at for a in plan if a.kind in ("redis-restart", "postgres-drop", "postgres-restart")
    )
    assert all(later - earlier > 5 for earlier, later in zip(outages, outages[1:], strict=False))


def test_every_plan_has_both_ticket_issued_answer_lost_faults() -> None:
    answer_lost = {index for index, kind in enumerate(FAULT_MENU) if kind.spec.get("answer_lost")}
    assert {FAULT_MENU[index].spec["answer_lost"] for index in answer_lost} == {"stall", "drop"}
    assert all(FAULT_MENU[index].always for index in answer_lost)
    for seed in range(20):
        for faults in (2, 4, 12):
            plan = make_plan(
                seed=seed, window=100.0, workers=2, kills=0, redis_restarts=0,
                postgres_drops=0, faults=faults,
            )  # fmt: skip
            targets = [action.target for action in plan if action.kind == "fault"]
            assert len(targets) == faults
            assert answer_lost <= set(targets)
    # The stall outlasts the client's signer read timeout (15 s).
    [stall] = [FAULT_MENU[i] for i in answer_lost if FAULT_MENU[i].spec["answer_lost"] == "stall"]
    assert stall.spec["delay"] == 16.0


def test_quick_sets_small_defaults_but_explicit_flags_win() -> None:
    quick = parse_arguments(["--quick", "--kills", "5"])
    assert (quick.generations, quick.kills, quick.redis_restarts, quick.faults) == (30, 5, 1, 4)
    assert (quick.postgres_drops, quick.postgres_restarts) == (1, 1)
    full = parse_arguments([])
    assert (full.generations, full.kills, full.redis_restarts, full.postgres_drops) == (
        200,
        20,
        2,
        1,
    )
    assert full.postgres_restarts == 1


def _row(
    status: str, *, code: str = "", image: str = "", manifest: str = "", claimed: bool = False
) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "status": status,
        "stage": "",
        "error_code": code,
        "image": image,
        "manifest_id": manifest,
        "payment_claimed_at": T0 if claimed else None,
        "created_at": T0,
        "finished_at": T0 + timedelta(seconds=3),
    }


def test_tally_counts_double_tickets_lost_images_and_stuck_rows(tmp_path: Path) -> None:
    (tmp_path / "generations" / "1").mkdir(parents=True)
    for name in ("ok.png", "orphan.png", "twice.png", "redone.png"):
        (tmp_path / "generations" / "1" / name).write_bytes(b"png")
    ok = _row("succeeded", image="generations/1/ok.png", manifest="m-ok")
    no_file = _row("succeeded", image="generations/1/gone.png", manifest="m-gone")
    twice = _row("succeeded", image="generations/1/twice.png", manifest="m-twice")
    unknown = _row("failed", code="outcome_unknown", manifest="m-unknown", claimed=True)
    unknown_unpaid = _row("failed", code="outcome_unknown", manifest="m-never", claimed=True)
    unknown_released = _row("failed", code="outcome_unknown")
    runner_failed = _row("failed", code="upstream_failed", manifest="m-runner")
    interrupted = _row("failed", code="interrupted", manifest="m-interrupted")
    unpaid_failure = _row("failed", code="upstream_unavailable")
    redone = _row("succeeded", image="generations/1/redone.png", manifest="m-redone")
    stuck = _row("running")
    rows = [
        ok,
        no_file,
        twice,
        unknown,
        unknown_unpaid,
        unknown_released,
        runner_failed,
        interrupted,
        unpaid_failure,
        redone,
        stuck,
    ]

    def event(manifest: str, request_id: str = "0a1b2c3d") -> dict[str, object]:
        # gatewayRequestId is the signer's own id: never used for attribution.
        return {"source": "signer", "gatewayRequestId": request_id, "manifestId": manifest}

    events = [
        event("m-ok"),
        event("m-gone"),
        event("m-twice"),
        event("m-twice"),
        event("m-unknown"),
        event("m-runner"),
        event("m-interrupted"),
        event("m-redone"),
        event("m-nobody", request_id=str(ok["id"])),  # not attributed by the request id
        {"source": "gateway", "gatewayRequestId": "x", "manifestId": "m-ok"},
    ]
    attempts = [
        Attempt(0, T0 + timedelta(seconds=1), 500, None),
        Attempt(0, T0 + timedelta(seconds=2), 201, str(ok["id"])),
    ]
    record = ActionRecord(Action(1.0, "redis-restart"), "redis", T0, T0, back_up=T0)
    delivered = {
        str(ok["id"]): "generations/1/ok.png",
        str(redone["id"]): "generations/1/first.png",  # delivered, then replaced
        str(interrupted["id"]): "generations/1/undone.png",  # delivered, then undone
    }

    figures = tally(
        rows=rows,
        events=events,
        payment_requests=[{"status": 200}] * 9 + [{"status": 500}],
        attempts=attempts,
        abandoned=[],
        records=[record],
        media_root=tmp_path,
        delivered=delivered,
    )

    assert figures.submitted_rows == 11
    assert figures.api_accepted == 1
    assert figures.unconfirmed_rows == 10
    assert figures.stuck == 1
    assert figures.failed_by_code == {
        "outcome_unknown": 3,
        "upstream_failed": 1,
        "interrupted": 1,
        "upstream_unavailable": 1,
    }
    assert figures.tickets_total == 9
    assert figures.payment_200s == 9
    assert figures.unattributed_tickets == 1
    assert figures.tickets_per_generation == {0: 4, 1: 6, 2: 1}
    assert figures.over_one_ticket == [str(twice["id"])]
    assert figures.succeeded_missing_file == [str(no_file["id"])]
    assert figures.paid_outcome_unknown == 1
    assert figures.outcome_unknown_by_tickets == {0: 2, 1: 1}
    assert figures.outcome_unknown_without_claim == [str(unknown_released["id"])]
    assert figures.paid_upstream_failed == 1
    assert figures.delivered_seen == 3
    assert figures.delivered_deleted == sorted(
        [
            f"{redone['id']} (generations/1/first.png)",
            f"{interrupted['id']} (generations/1/undone.png)",
        ]
    )
    assert figures.lost_after_payment == [
        str(no_file["id"]),
        *figures.delivered_deleted,
        f"{interrupted['id']} (failed/interrupted)",
    ]
    assert figures.paid_not_succeeded_by_code == {
        "failed/outcome_unknown": 1,
        "failed/upstream_failed": 1,
        "failed/interrupted": 1,
    }
    assert figures.orphan_files == 1
    assert figures.api_refused_attempts == 1
    assert not figures.ok
    [recovery] = figures.recoveries
    assert recovery.first_accepted == 2.0
    assert recovery.first_succeeded == 3.0
    assert recovery.refused == 1


def test_tally_a_second_upstream_failed_ticket_is_lost_and_double(tmp_path: Path) -> None:
    failed = _row("failed", code="upstream_failed", manifest="m-1")
    events = [{"source": "signer", "gatewayRequestId": "a", "manifestId": "m-1"}] * 2
    figures = tally(
        rows=[failed],
        events=events,
        payment_requests=[],
        attempts=[],
        abandoned=[],
        records=[],
        media_root=tmp_path,
        delivered={},
    )
    assert figures.over_one_ticket == [str(failed["id"])]
    assert figures.lost_after_payment == [f"{failed['id']} (failed/upstream_failed)"]
    assert figures.paid_upstream_failed == 1


def test_write_section_replaces_only_the_drill_block(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    path.write_text(f"# Reliability\n\nhand-written\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    write_section(path, "new figures\n")
    assert path.read_text() == (
        f"# Reliability\n\nhand-written\n\n{BEGIN}\nnew figures\n{END}\n\nafter\n"
    )


def test_tally_counts_lost_answers_and_tickets_our_client_never_confirmed(tmp_path: Path) -> None:
    (tmp_path / "generations").mkdir()
    (tmp_path / "generations" / "ok.png").write_bytes(b"png")
    confirmed = {
        **_row("succeeded", image="generations/ok.png", manifest="m-1"),
        "tickets_paid": 1,
    }
    stalled = {**_row("failed", code="outcome_unknown", manifest="m-2", claimed=True)}
    dropped = {**_row("failed", code="outcome_unknown", manifest="m-3", claimed=True)}
    unpaid = _row("failed", code="outcome_unknown", claimed=True)
    for row in (stalled, dropped, unpaid):
        row["tickets_paid"] = 0
    events = [
        {"source": "signer", "gatewayRequestId": "a", "manifestId": manifest}
        for manifest in ("m-1", "m-2", "m-3")
    ]
    payment_requests = [
        {"status": 200, "answerLost": None},
        {"status": 200, "answerLost": "stall"},
        {"status": 200, "answerLost": "drop"},
        {"status": 500, "answerLost": None},
        {"status": 402, "answerLost": "drop"},  # the handler refused: no ticket, not counted
    ]
    figures = tally(
        rows=[confirmed, stalled, dropped, unpaid],
        events=events,
        payment_requests=payment_requests,
        attempts=[],
        abandoned=[],
        records=[],
        media_root=tmp_path,
        delivered={},
    )
    assert figures.answers_lost == {"drop": 1, "stall": 1}
    assert figures.paid_unconfirmed_by_end == {"failed/outcome_unknown": 2}
    assert figures.paid_outcome_unknown == 2
    assert figures.over_one_ticket == []
    assert figures.lost_after_payment == []
    assert figures.payment_200s == figures.tickets_total == 3
