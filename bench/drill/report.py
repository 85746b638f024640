"""The drill's markdown section (printed, and written into ``docs/reliability.md``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.drill.chaos import ActionRecord
from bench.drill.tally import Figures

BEGIN = "<!-- drill:begin -->"
END = "<!-- drill:end -->"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _counts(counts: dict[Any, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "none"


def render(
    *,
    figures: Figures,
    context: dict[str, Any],
    records: list[ActionRecord],
    settle_steps: list[str],
    errors: list[str],
) -> str:
    f = figures
    verdict = "PASS" if f.ok else "FAIL"
    kinds = Counter(record.action.kind for record in records)
    fault_labels = Counter(
        f"{record.detail['label']} x{record.detail['times']}"
        for record in records
        if record.action.kind == "fault"
    )
    kills = [record for record in records if "running" in record.detail]
    busy = sum(1 for record in kills if record.detail["running"][0])
    claimed = sum(1 for record in kills if record.detail["running"][1])
    lines = [
        f"### Drill run: seed {context['seed']}, {context['generations']} generations ({verdict})",
        "",
        f"Command: `{context['command']}`  ",
        f"Code: branch `{context['branch']}`, commit `{context['commit']}`"
        f"{' (uncommitted changes)' if context['dirty'] else ''}; run {context['started']}"
        f" on {context['cpus']} CPUs (load before: {context['load']}); wall clock"
        f" {context['wall']:.0f} s.  ",
        f"Stack: own PostgreSQL {context['postgres']} cluster on port"
        f" {context['postgres_port']} (database `{context['database']}`), own"
        f" redis-server {context['redis_version']} on port {context['redis_port']},"
        f" {context['workers']} Celery workers x {context['worker_concurrency']} prefork"
        f" children, gunicorn x {context['web_workers']}, sandbox runner latency"
        f" {context['runner_latency']} s; submissions over {context['window']:.0f} s.",
        "",
        "| | |",
        "|---|---|",
        f"| faults applied | {kinds.get('kill-child', 0)} pool-child SIGKILLs,"
        f" {kinds.get('kill-worker', 0)} worker-group SIGKILLs (+ restart),"
        f" {kinds.get('redis-restart', 0)} Redis restarts,"
        f" {kinds.get('postgres-drop', 0)} Postgres connection drops,"
        f" {kinds.get('postgres-restart', 0)} Postgres restarts,"
        f" {kinds.get('fault', 0)} sandbox faults |",
        f"| kills that landed while a generation was running | {busy} of {len(kills)}"
        f" ({claimed} while a payment was claimed; system-wide, read just before the kill) |",
        f"| sandbox faults | {_counts(dict(fault_labels.most_common()))} |",
        f"| generations submitted (rows) | {f.submitted_rows} ({f.api_accepted} API 201s;"
        f" {f.api_refused_attempts} refused attempts: {_counts(f.api_refusals)};"
        f" {f.abandoned_indexes} given up) |",
        f"| rows created although the POST answered an error | {f.unconfirmed_rows} |",
        f"| succeeded | {f.status.get('succeeded', 0)} |",
        f"| failed, by code | {sum(f.failed_by_code.values())} ({_counts(f.failed_by_code)}) |",
        f"| stuck after reconcile (must be 0) | **{f.stuck}** |",
        f"| tickets bought (signer 200s / events) | {f.payment_200s} / {f.tickets_total}"
        f" ({f.unattributed_tickets} not attributable to a generation) |",
        f"| generations by tickets bought | {_counts(f.tickets_per_generation)} |",
        f"| generations with > 1 ticket (must be 0) | **{len(f.over_one_ticket)}** |",
        f"| paid, not succeeded | {_counts(f.paid_not_succeeded_by_code)} |",
        f"| paid, outcome unknown (`failed/outcome_unknown`, claim kept; not lost) |"
        f" {f.paid_outcome_unknown} (all `outcome_unknown` by tickets bought:"
        f" {_counts(f.outcome_unknown_by_tickets)};"
        f" without a kept claim (must be 0): **{len(f.outcome_unknown_without_claim)}**) |",
        f"| signer tickets issued whose answer was lost (sandbox `answerLost` fault) |"
        f" {_counts(f.answers_lost)} |",
        f"| paid at the sandbox, never confirmed by our client (answer lost or worker killed"
        f" before reading it), by end state | {_counts(f.paid_unconfirmed_by_end)} |",
        f"| paid, runner failed after payment (`upstream_failed`, one ticket; not lost) |"
        f" {f.paid_upstream_failed} |",
        f"| images lost after payment (must be 0) | **{len(f.lost_after_payment)}**"
        f" ({len(f.succeeded_missing_file)} succeeded without a file;"
        f" {len(f.delivered_deleted)} of {f.delivered_seen} delivered images later"
        " undone or deleted) |",
        f"| succeeded without a ticket | {f.succeeded_without_ticket} |",
        f"| image files not referenced by a succeeded generation | {f.orphan_files} |",
        "",
        "Recovery after each outage (from the moment the service answered again):",
        "",
        "| outage | first API 201 after | first success submitted after | refused attempts |",
        "|---|---|---|---|",
    ]
    for recovery in f.recoveries:
        lines.append(
            f"| {recovery.label} | {_seconds(recovery.first_accepted)} |"
            f" {_seconds(recovery.first_succeeded)} | {recovery.refused} |"
        )
    lines += ["", "Settling after the submissions (reconcile):", ""]
    lines += [f"- {step}" for step in settle_steps]
    details = []
    if f.stuck_detail:
        details.append("Stuck: " + "; ".join(f.stuck_detail[:10]))
    if f.over_one_ticket:
        details.append("More than one ticket: " + ", ".join(f.over_one_ticket[:10]))
    if f.outcome_unknown_without_claim:
        details.append(
            "outcome_unknown without a kept claim: " + ", ".join(f.outcome_unknown_without_claim)
        )
    if f.lost_after_payment:
        details.append("Lost after payment: " + "; ".join(f.lost_after_payment[:10]))
    if errors:
        details.append("Drill errors: " + "; ".join(errors[:5]))
    if details:
        lines += [""] + [f"{line}  " for line in details]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the text between the drill markers (append the markers if missing)."""
    text = path.read_text() if path.exists() else "# Reliability\n"
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
