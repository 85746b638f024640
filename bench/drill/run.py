"""One drill: own Redis + own Postgres database, the bench stack, load, faults, settling.

Settling: after the last submission the drill waits until the workers are idle (no
message queued, running, reserved or scheduled, asked with ``celery inspect``), then
advances the clock past the windows the product waits out in production, because a
ten-minute drill cannot wait them out in real time:

1. ``generations_reconcile(now=now + 16 min)``: past reconcile's queued window (15 min)
   and its abandoned-running window (hard time limit + 120 s); the drill's process runs
   the same service the beat task runs, with a later clock;
2. Redis redelivers every unacknowledged message, as it would once the visibility
   timeout (1 h) passed (kombu's own ``restore_by_tag``);
3. the reconcile once more, as of an hour and 16 minutes later.

Between steps it waits for the workers to go idle again. What is still queued or
running after that is stuck.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.drill.infra import DrillDatabase, OwnRedis, utc_now
from bench.drill.tally import FINISHED

logger = logging.getLogger(__name__)

RECONCILE_TASK = "inference.tasks.generations_reconcile_task"
RECONCILE_WINDOW = timedelta(minutes=16)
VISIBILITY_TIMEOUT = timedelta(hours=1)


def use_stack_environment(environment: dict[str, str]) -> None:
    """Point this process's Django at the stack (same database, Redis and media root)."""
    os.environ.update(environment)
    import django

    django.setup()


def _retrying(call: Callable[[], Any], attempts: int = 5) -> Any:
    """Run an ORM read, reconnecting after the drill's own Postgres sessions were dropped."""
    from django.db import DatabaseError, close_old_connections, connection

    for attempt in range(attempts):
        close_old_connections()
        try:
            return call()
        except DatabaseError:
            connection.close()
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    return None


def generation_rows(email: str) -> list[dict[str, Any]]:
    from inference.models import Generation

    fields = (
        "id",
        "status",
        "stage",
        "error_code",
        "image",
        "manifest_id",
        "tickets_paid",
        "payment_claimed_at",
        "created_at",
        "finished_at",
    )
    rows: list[dict[str, Any]] = _retrying(
        lambda: list(Generation.objects.filter(owner__email=email).values(*fields))
    )
    return rows


def unfinished_count(email: str) -> int:
    return sum(1 for row in generation_rows(email) if row["status"] not in FINISHED)


def unfinished_states(email: str) -> str:
    """``status/stage (payment claimed or not): count`` of the unfinished generations."""
    states = Counter(
        f"{row['status']}/{row['stage'] or '-'}{' (claimed)' if row['payment_claimed_at'] else ''}"
        for row in generation_rows(email)
        if row["status"] not in FINISHED
    )
    return ", ".join(f"{state}: {count}" for state, count in states.most_common()) or "none"


def running_now(email: str) -> tuple[int, int]:
    """(running generations, of which the payment is claimed) right now."""
    rows = [row for row in generation_rows(email) if row["status"] == "running"]
    return len(rows), sum(1 for row in rows if row["payment_claimed_at"])


class DeliveryWatcher:
    """Records every generation seen ``succeeded`` (and its image) while the drill runs.

    The tally then checks that each delivered image is still delivered at the end: a
    late or duplicate attempt must never undo a success or delete a delivered file.
    Reads that fail during an outage are skipped (the next sample catches up).
    """

    def __init__(self, email: str, interval: float = 2.0) -> None:
        self.email = email
        self.interval = interval
        self.delivered: dict[str, str] = {}
        self.samples = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample()  # one last look from the caller's thread

    def sample(self) -> None:
        try:
            rows = generation_rows(self.email)
        except Exception:
            self.failed += 1
            return
        self.samples += 1
        for row in rows:
            if row["status"] == "succeeded" and row["image"]:
                self.delivered.setdefault(str(row["id"]), row["image"])

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                self.sample()
        finally:
            connection.close()


def send_reconcile() -> None:
    from config.celery import app

    app.send_task(RECONCILE_TASK)


def workers_idle() -> bool:
    """Nothing queued in Redis and every worker that answers has nothing in hand."""
    from config.celery import app

    with app.connection_for_read() as connection:
        channel = connection.default_channel
        if channel.client.llen("celery"):
            return False
    inspector = app.control.inspect(timeout=1.0)
    replies = [inspector.active(), inspector.reserved(), inspector.scheduled()]
    if any(reply is None for reply in replies):
        return False  # no worker answered (restarting, or the broker is away)
    return not any(tasks for reply in replies for tasks in reply.values())


def wait_settled(email: str, *, deadline: float) -> int:
    """Until the workers are idle twice in a row (2 s apart); returns the unfinished count.

    Idle is required even when nothing is unfinished: a redelivered message for a
    finished generation must have run (and shown whether it pays again) before the tally.
    """
    idle_checks = 0
    unfinished = unfinished_count(email)
    while time.monotonic() < deadline:
        unfinished = unfinished_count(email)
        try:
            idle = workers_idle()
        except Exception:
            idle = False
        idle_checks = idle_checks + 1 if idle else 0
        if idle_checks >= 2:
            return unfinished
        time.sleep(2)
    return unfinished


def unacknowledged_count() -> int:
    from config.celery import app

    with app.connection_for_read() as connection:
        channel = connection.default_channel
        return int(channel.client.hlen(channel.unacked_key))


def restore_unacknowledged() -> int:
    """Redeliver every unacknowledged message now (as at the visibility timeout)."""
    from config.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        tags = channel.client.hkeys(channel.unacked_key)
        for tag in tags:
            channel.qos.restore_by_tag(tag)
    return len(tags)


def reconcile_as_of(offset: timedelta) -> str:
    """The reconcile service with the clock moved ``offset`` ahead."""
    from django.utils import timezone

    from inference import services

    reconcile = services.generations_reconcile
    if "now" not in inspect.signature(reconcile).parameters:
        send_reconcile()
        return "reconcile takes no clock; sent the beat task instead (windows not advanced)"
    result = _retrying(lambda: reconcile(now=timezone.now() + offset))
    return f"reconcile as of now + {offset}: {result}"


def settle(email: str, *, deadline: float) -> list[str]:
    steps: list[str] = []
    started = time.monotonic()
    left = wait_settled(email, deadline=deadline)
    steps.append(
        f"workers idle after {time.monotonic() - started:.0f} s; {left} unfinished"
        f" before any clock advance ({unfinished_states(email)});"
        f" {unacknowledged_count()} unacknowledged messages in Redis"
    )
    for label, action in (
        ("reconcile", lambda: reconcile_as_of(RECONCILE_WINDOW)),
        (
            "visibility timeout",
            lambda: f"Redis redelivered {restore_unacknowledged()} unacknowledged messages",
        ),
        ("reconcile", lambda: reconcile_as_of(VISIBILITY_TIMEOUT + RECONCILE_WINDOW)),
    ):
        if time.monotonic() >= deadline:
            steps.append(f"{label}: skipped, out of time")
            break
        description = action()
        started = time.monotonic()
        left = wait_settled(email, deadline=deadline)
        steps.append(
            f"{description}; idle after {time.monotonic() - started:.0f} s, {left} unfinished"
            + (f" ({unfinished_states(email)})" if left else "")
        )
    return steps


def cleanup(redis_server: OwnRedis, database: DrillDatabase, *, keep_database: bool) -> None:
    try:
        from django.db import connections

        connections.close_all()
    except Exception:
        logger.debug("no Django connections to close", exc_info=True)
    redis_server.stop()
    if not keep_database:
        try:
            database.drop()
        except Exception:
            logger.exception("could not drop %s", database.name)


def redis_version(redis_server: OwnRedis) -> str:
    return str(redis_server.client().info("server").get("redis_version"))


def media_root() -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT)


def now_text() -> str:
    return utc_now().strftime("%Y-%m-%d %H:%M UTC")
