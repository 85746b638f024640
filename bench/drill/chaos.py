"""The fault plan (fixed by the seed) and the thread that carries it out.

Every fault is scheduled at an offset into the submission window, drawn from
``random.Random(seed)``: worker SIGKILLs (a prefork child, whose message Celery requeues
at once, or the whole worker group, whose message stays unacknowledged in Redis until the
visibility timeout), Redis restarts, a Postgres connection drop, a restart of the drill's
own PostgreSQL cluster, and sandbox faults on the signer, the runners and pymthouse (each
for 1-3 requests; the "ticket issued, answer lost" kinds are always in the plan). The
plan is reproducible; which request a fault lands on depends on timing and is not.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.drill.infra import DrillDatabase, OwnPostgres, OwnRedis, utc_now
from bench.stack import ManagedProcess, Stack
from tests.sandbox_server import SandboxControl

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultKind:
    label: str
    method: str
    path: str
    spec: dict[str, Any]
    always: bool = False  # drawn at least once whenever the plan has that many faults


SIGNER_PAYMENT = "/signer/generate-live-payment"
#: Every runner's app (``/apps/{id}/app/``: the unpaid challenge and the paid call) and
#: its payment-session paths.
RUNNER_APPS = "/apps/*"
#: Sandbox faults to draw from. Most answer (or drop) before the sandbox's handler runs,
#: so a signer request they hit never issues a ticket (a delay-only fault past our read
#: timeout finds the client gone, and issues nothing either). The two ``answerLost``
#: faults run the handler first: the ticket is issued (usage event recorded, user
#: debited, as for a real 200), then the answer is stalled past
#: LIVEPEER_SIGNER_READ_TIMEOUT (15 s) or the connection is dropped.
FAULT_MENU: tuple[FaultKind, ...] = (
    FaultKind("signer 500", "POST", SIGNER_PAYMENT, {"status": 500, "body": "internal error"}),
    FaultKind("signer 502", "POST", SIGNER_PAYMENT, {"status": 502, "body": "Bad Gateway"}),
    FaultKind("signer 503", "POST", SIGNER_PAYMENT, {"status": 503, "body": "unavailable"}),
    FaultKind("signer connection dropped", "POST", SIGNER_PAYMENT, {"drop": True}),
    FaultKind(
        "signer 483 insufficient balance",
        "POST",
        SIGNER_PAYMENT,
        {"status": 483, "body": "insufficient balance"},
    ),
    FaultKind(
        "signer ticket issued, answer stalled past our read timeout",
        "POST",
        SIGNER_PAYMENT,
        {"answer_lost": "stall", "delay": 16.0},
        always=True,
    ),
    FaultKind(
        "signer ticket issued, connection dropped",
        "POST",
        SIGNER_PAYMENT,
        {"answer_lost": "drop"},
        always=True,
    ),
    FaultKind(
        "signer discovery 503",
        "GET",
        "/signer/discover-orchestrators",
        {"status": 503, "body": "unavailable"},
    ),
    FaultKind("runner 503", "POST", RUNNER_APPS, {"status": 503, "body": {"detail": "busy"}}),
    FaultKind("runner 500", "POST", RUNNER_APPS, {"status": 500, "body": {"detail": "boom"}}),
    FaultKind(
        "runner 429 Retry-After 2",
        "POST",
        RUNNER_APPS,
        {"status": 429, "headers": {"Retry-After": "2"}, "body": {"detail": "slow down"}},
    ),
    FaultKind(
        "runner connection dropped after 0.5 s", "POST", RUNNER_APPS, {"drop": True, "delay": 0.5}
    ),
    FaultKind("pymthouse token 503", "POST", "/api/v1/oidc/token", {"status": 503, "body": "busy"}),
)


@dataclass(frozen=True)
class Action:
    at: float  # seconds into the submission window
    kind: str  # kill-child | kill-worker | redis-restart | postgres-drop | postgres-restart | fault
    target: int = 0  # worker index (kills), menu index (faults)
    times: int = 1  # requests a sandbox fault hits


@dataclass
class ActionRecord:
    action: Action
    description: str
    started: datetime
    finished: datetime | None = None
    back_up: datetime | None = None  # restarts / drops: when the service answered again
    detail: dict[str, Any] = field(default_factory=dict)


def make_plan(
    *,
    seed: int,
    window: float,
    workers: int,
    kills: int,
    redis_restarts: int,
    postgres_drops: int,
    faults: int,
    postgres_restarts: int = 0,
) -> list[Action]:
    """The whole schedule, from the seed alone. Restarts and drops get their own slices
    of the window so their recoveries can be told apart."""
    rng = random.Random(seed)
    plan: list[Action] = []
    for _ in range(kills):
        kind = rng.choice(("kill-child", "kill-worker"))
        plan.append(Action(rng.uniform(0.03, 0.92) * window, kind, target=rng.randrange(workers)))
    outages = (
        ["redis-restart"] * redis_restarts
        + ["postgres-drop"] * postgres_drops
        + ["postgres-restart"] * postgres_restarts
    )
    rng.shuffle(outages)
    slice_width = 0.7 / max(1, len(outages))
    for index, kind in enumerate(outages):
        low = 0.12 + index * slice_width
        plan.append(Action(rng.uniform(low, low + slice_width * 0.6) * window, kind))
    required = [index for index, kind in enumerate(FAULT_MENU) if kind.always]
    targets = [rng.randrange(len(FAULT_MENU)) for _ in range(faults)]
    if faults >= len(required):
        # Each "always" kind at least once: it takes the place of a random draw.
        slots = rng.sample(range(faults), len(required))
        for slot, index in zip(slots, required, strict=True):
            targets[slot] = index
    for target in targets:
        plan.append(
            Action(
                rng.uniform(0.03, 0.92) * window,
                "fault",
                target=target,
                times=rng.randint(1, 3),
            )
        )
    plan.sort(key=lambda action: action.at)
    return plan


def _pool_children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (a prefork worker's pool processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


class Chaos:
    """Carries out the plan in a thread; the submission window starts at ``t0``."""

    def __init__(
        self,
        *,
        plan: list[Action],
        seed: int,
        stack: Stack,
        workers: list[ManagedProcess],
        redis_server: OwnRedis,
        database: DrillDatabase,
        postgres: OwnPostgres,
        redis_down_seconds: float,
        postgres_down_seconds: float,
        running_now: Callable[[], tuple[int, int]],
    ) -> None:
        self.plan = plan
        self.rng = random.Random(seed + 1)  # which pool child to kill
        self.stack = stack
        self.workers = workers
        self.redis_server = redis_server
        self.database = database
        self.postgres = postgres
        self.redis_down_seconds = redis_down_seconds
        self.postgres_down_seconds = postgres_down_seconds
        #: (generations running, of which payment claimed), read just before a kill
        self.running_now = running_now
        self.control = SandboxControl(stack.sandbox_url)
        self.records: list[ActionRecord] = []
        self.restarted_workers = 0
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, t0: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(t0,), name="chaos", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(30)

    def _run(self, t0: float) -> None:
        for action in self.plan:
            delay = t0 + action.at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                self.records.append(self._apply(action))
            except Exception as exc:
                logger.exception("drill action %s failed", action)
                self.errors.append(f"{action.kind} at {action.at:.1f} s: {exc!r}")

    def _apply(self, action: Action) -> ActionRecord:
        return self._apply_action(action, self._running() if "kill" in action.kind else None)

    def _running(self) -> tuple[int, int] | None:
        try:
            return self.running_now()
        except Exception:
            logger.exception("could not count running generations")
            return None

    def _apply_action(self, action: Action, running: tuple[int, int] | None) -> ActionRecord:
        started = utc_now()
        detail: dict[str, Any] = {} if running is None else {"running": running}
        if action.kind == "kill-child":
            worker = self.workers[action.target]
            children = _pool_children(worker.process.pid) if worker.process else []
            if not children:
                return ActionRecord(
                    action, f"{worker.name}: no pool child to kill", started, detail=detail
                )
            victim = self.rng.choice(children)
            os.kill(victim, signal.SIGKILL)
            return ActionRecord(
                action,
                f"SIGKILL pool child {victim} of {worker.name}",
                started,
                utc_now(),
                detail=detail,
            )
        if action.kind == "kill-worker":
            worker = self.workers[action.target]
            if worker.process is not None:
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait(timeout=10)
            worker.stop()  # sweeps the group, closes the log
            self.restarted_workers += 1
            replacement = self.stack.spawn_worker(
                f"worker-{action.target + 1}-r{self.restarted_workers}"
            )
            self.workers[action.target] = replacement
            return ActionRecord(
                action,
                f"SIGKILL worker group {worker.name}, started {replacement.name}",
                started,
                utc_now(),
                detail=detail,
            )
        if action.kind == "redis-restart":
            went_down, answered = self.redis_server.restart(down_seconds=self.redis_down_seconds)
            record = ActionRecord(
                action,
                f"Redis SHUTDOWN NOSAVE, down {self.redis_down_seconds:g} s, restarted",
                went_down,
                answered,
            )
            record.back_up = answered
            return record
        if action.kind == "postgres-restart":
            went_down, answered = self.postgres.restart(down_seconds=self.postgres_down_seconds)
            record = ActionRecord(
                action,
                f"PostgreSQL restart (pg_ctl stop -m fast, down {self.postgres_down_seconds:g} s,"
                " start)",
                went_down,
                answered,
            )
            record.back_up = answered
            return record
        if action.kind == "postgres-drop":
            terminated = self.database.terminate_backends()
            now = utc_now()
            return ActionRecord(
                action,
                f"pg_terminate_backend on {terminated} sessions of {self.database.name}",
                started,
                now,
                back_up=now,
                detail={"terminated": terminated},
            )
        kind = FAULT_MENU[action.target]
        spec = dict(kind.spec)
        self.control.add_fault(kind.method, kind.path, times=action.times, **spec)
        return ActionRecord(
            action,
            f"sandbox fault: {kind.label} ({kind.method} {kind.path}) x{action.times}",
            started,
            utc_now(),
            detail={"label": kind.label, "times": action.times},
        )
