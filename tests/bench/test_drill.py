"""The fault drill's plan and arithmetic (the drill itself is run by ``make drill``)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.drill.__main__ import parse_arguments
from bench.drill.chaos import Action, ActionRecord, make_plan
from bench.drill.load import Attempt
from bench.drill.report import BEGIN, END, write_section
from bench.drill.tally import tally

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _plan(seed: int) -> list[Action]:
    return make_plan(
        seed=seed, window=100.0, workers=2, kills=20, redis_restarts=2, postgres_drops=1, faults=12
    )


def test_plan_is_fixed_by_the_seed_and_has_every_fault() -> None:
    plan = _plan(7)
    assert plan == _plan(7)
    assert plan != _plan(8)
    kinds = Counter(action.kind for action in plan)
    assert kinds["kill-child"] + kinds["kill-worker"] == 20
    assert kinds["redis-restart"] == 2
    assert kinds["postgres-drop"] == 1
    assert kinds["fault"] == 12
    assert [action.at for action in plan] == sorted(action.at for action in plan)
    assert all(0 < action.at < 100 for action in plan)
    outages = sorted(a.at for a in plan if a.kind in ("redis-restart", "postgres-drop"))
    assert all(later - earlier > 5 for earlier, later in zip(outages, outages[1:], strict=False))


def test_quick_sets_small_defaults_but_explicit_flags_win() -> None:
    quick = parse_arguments(["--quick", "--kills", "5"])
    assert (quick.generations, quick.kills, quick.redis_restarts, quick.faults) == (30, 5, 1, 4)
    full = parse_arguments([])
    assert (full.generations, full.kills, full.redis_restarts, full.postgres_drops) == (
        200,
        20,
        2,
        1,
    )


def _row(status: str, *, code: str = "", image: str = "", manifest: str = "") -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "status": status,
        "stage": "",
        "error_code": code,
        "image": image,
        "manifest_id": manifest,
        "payment_claimed_at": None,
        "created_at": T0,
        "finished_at": T0 + timedelta(seconds=3),
    }


def test_tally_counts_double_tickets_lost_images_and_stuck_rows(tmp_path: Path) -> None:
    (tmp_path / "generations" / "1").mkdir(parents=True)
    (tmp_path / "generations" / "1" / "ok.png").write_bytes(b"png")
    (tmp_path / "generations" / "1" / "orphan.png").write_bytes(b"png")
    ok = _row("succeeded", image="generations/1/ok.png")
    no_file = _row("succeeded", image="generations/1/gone.png")
    twice = _row("succeeded", image="generations/1/ok.png", manifest="m-twice")
    unknown = _row("failed", code="outcome_unknown")
    interrupted = _row("failed", code="interrupted")
    unpaid_failure = _row("failed", code="upstream_unavailable")
    stuck = _row("running")
    rows = [ok, no_file, twice, unknown, interrupted, unpaid_failure, stuck]

    def event(gid: object, manifest: str = "") -> dict[str, object]:
        return {"source": "signer", "gatewayRequestId": gid, "manifestId": manifest}

    events = [
        event(str(ok["id"])),
        event(str(no_file["id"])),
        event(str(twice["id"])),
        event(None, "m-twice"),  # attributed through the manifest
        event(str(unknown["id"])),
        event(str(interrupted["id"])),
        event(None, "m-nobody"),
        {"source": "gateway", "gatewayRequestId": str(ok["id"]), "manifestId": ""},
    ]
    attempts = [
        Attempt(0, T0 + timedelta(seconds=1), 500, None),
        Attempt(0, T0 + timedelta(seconds=2), 201, str(ok["id"])),
    ]
    record = ActionRecord(Action(1.0, "redis-restart"), "redis", T0, T0, back_up=T0)

    figures = tally(
        rows=rows,
        events=events,
        payment_requests=[{"status": 200}] * 7 + [{"status": 500}],
        attempts=attempts,
        abandoned=[],
        records=[record],
        media_root=tmp_path,
    )

    assert figures.submitted_rows == 7
    assert figures.api_accepted == 1
    assert figures.unconfirmed_rows == 6
    assert figures.stuck == 1
    assert figures.failed_by_code == {
        "outcome_unknown": 1,
        "interrupted": 1,
        "upstream_unavailable": 1,
    }
    assert figures.tickets_total == 7
    assert figures.payment_200s == 7
    assert figures.unattributed_tickets == 1
    assert figures.tickets_per_generation == {0: 2, 1: 4, 2: 1}
    assert figures.over_one_ticket == [str(twice["id"])]
    assert figures.succeeded_missing_file == [str(no_file["id"])]
    assert figures.lost_after_payment == [
        str(no_file["id"]),
        f"{interrupted['id']} (failed/interrupted)",
    ]
    assert figures.paid_not_succeeded_by_code == {
        "failed/outcome_unknown": 1,
        "failed/interrupted": 1,
    }
    assert figures.orphan_files == 1
    assert figures.api_refused_attempts == 1
    assert not figures.ok
    [recovery] = figures.recoveries
    assert recovery.first_accepted == 2.0
    assert recovery.first_succeeded == 3.0
    assert recovery.refused == 1


def test_write_section_replaces_only_the_drill_block(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    path.write_text(f"# Reliability\n\nhand-written\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    write_section(path, "new figures\n")
    assert path.read_text() == (
        f"# Reliability\n\nhand-written\n\n{BEGIN}\nnew figures\n{END}\n\nafter\n"
    )
