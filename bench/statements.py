"""SQL statements and write transactions per image, counted (issue 16).

Runs inside the bench stack's own Django (``manage.py shell``, the stack's database,
cache and sandbox): the bench user's images, admitted by ``generation_create`` (what
the submit request runs) and run by ``generation_run`` (what ``generation_run_task``
runs in a worker; Celery itself writes nothing to the database: no result backend),
each counted by :func:`bench.sqlcount.sql_counted`. One warm-up image first (the
discovery cache and the observed price, as in a live worker), then ``images`` images
in batches of ``concurrency`` threads. The web request's own statements around the
service (authentication, the session) and the client's polls are not in these figures.
"""

from __future__ import annotations

import json
import statistics
import threading
from dataclasses import dataclass
from typing import Any

MARKER = "STATEMENTS "

_SCRIPT = """
from bench.statements import count_in_process
count_in_process(email=%(email)r, concurrency=%(concurrency)d, images=%(images)d)
"""


@dataclass(frozen=True)
class StatementCounts:
    concurrency: int
    admission_statements: list[int]
    run_statements: list[int]
    admission_writes: list[int]
    run_writes: list[int]

    @property
    def statements(self) -> list[int]:
        return [a + r for a, r in zip(self.admission_statements, self.run_statements, strict=True)]

    @property
    def write_transactions(self) -> list[int]:
        return [a + r for a, r in zip(self.admission_writes, self.run_writes, strict=True)]


def statement_counts(stack: Any, *, concurrency: int, images: int) -> StatementCounts:
    """Count on ``stack`` (a running ``bench.stack.Stack``) in a ``manage.py shell``."""
    output = stack.manage(
        "shell",
        "-c",
        _SCRIPT % {"email": stack.email, "concurrency": concurrency, "images": images},
    )
    line = next(line for line in output.splitlines() if line.startswith(MARKER))
    return StatementCounts(**json.loads(line.removeprefix(MARKER)))


def count_in_process(*, email: str, concurrency: int, images: int) -> None:
    """Print one ``STATEMENTS {json}`` line (called by :func:`statement_counts`)."""
    from django.db import connections

    from accounts.models import User
    from bench.sqlcount import SqlCount, sql_counted
    from inference.models import Generation, GenerationStatus
    from inference.services import generation_create, generation_run

    owner = User.objects.get(email=email)
    counts: list[tuple[SqlCount, SqlCount]] = []
    errors: list[BaseException] = []

    def image(index: int, record: bool) -> None:
        try:
            with sql_counted() as admit:
                generation = generation_create(
                    owner=owner,
                    prompt=f"statement count {index}",
                    width=512,
                    height=512,
                    enqueue=False,
                )
            with sql_counted() as run:
                generation_run(
                    generation_id=str(generation.pk), attempt_id=f"count-{generation.pk}"
                )
            row = Generation.objects.get(pk=generation.pk)
            if row.status != GenerationStatus.SUCCEEDED:
                raise RuntimeError(f"generation {generation.pk} ended {row.status}")
            if record:
                counts.append((admit, run))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    image(0, record=False)
    done = 0
    while done < images:
        batch = min(concurrency, images - done)
        threads = [
            threading.Thread(target=image, args=(done + offset + 1, True))
            for offset in range(batch)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done += batch
    if errors:
        raise errors[0]
    print(
        MARKER
        + json.dumps(
            {
                "concurrency": concurrency,
                "admission_statements": [a.statements for a, _ in counts],
                "run_statements": [r.statements for _, r in counts],
                "admission_writes": [a.write_transactions for a, _ in counts],
                "run_writes": [r.write_transactions for _, r in counts],
            }
        )
    )


def counts_rows(counts: list[StatementCounts]) -> list[tuple[str, str, str, str]]:
    """Rows for the markdown table: median (max) per image."""

    def text(values: list[int]) -> str:
        return f"{statistics.median(values):g} (max {max(values)})"

    return [
        (
            str(count.concurrency),
            f"{text(count.statements)}: admission {text(count.admission_statements)}"
            f" + run {text(count.run_statements)}",
            f"{text(count.write_transactions)}: admission {text(count.admission_writes)}"
            f" + run {text(count.run_writes)}",
            str(len(count.statements)),
        )
        for count in counts
    ]
