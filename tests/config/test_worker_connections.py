"""A Celery worker keeps its database connection from task to task (CONN_MAX_AGE), as
Django keeps one from request to request, and replaces one the server dropped.

Celery's Django fix-up closes every connection around every task unless
``CELERY_DB_REUSE_MAX`` is set; config/celery.py recycles them instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.helpers import wait_for
from tests.worker import WorkerProcess, purge_broker

pytestmark = pytest.mark.django_db(transaction=True)


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    from config.celery import app

    out = tmp_path / "probe.txt"
    purge_broker()
    worker = WorkerProcess(name="conn", include=("tests.config.connection_probe",)).start()
    app.conf.task_always_eager = False

    def run_one() -> list[str]:
        before = len(_lines(out))
        app.send_task("tests.connection_probe", args=[str(out)])
        wait_for(lambda: len(_lines(out)) == before + 1, timeout=30)
        return _lines(out)[-1]

    try:
        yield out, run_one
    finally:
        app.conf.task_always_eager = True
        worker.stop()
        purge_broker()


def test_a_worker_keeps_its_database_connection_from_task_to_task(probe) -> None:
    assert settings.CELERY_DB_REUSE_MAX == 1000
    _, run_one = probe
    lines = [run_one() for _ in range(3)]
    assert len({pid for pid, _, _ in lines}) == 1, lines  # one pool child ran all three
    assert [opened for _, opened, _ in lines] == ["1", "1", "1"], lines
    assert len({backend for _, _, backend in lines}) == 1, lines


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a server to drop it")
def test_a_dropped_connection_is_replaced_before_the_next_task(probe) -> None:
    _, run_one = probe
    _, opened, backend = run_one()
    assert opened == "1"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [int(backend)])
        (terminated,) = cursor.fetchone()
    assert terminated is True
    _, opened_after, backend_after = run_one()  # the health check finds it dead
    assert opened_after == "2"
    assert backend_after != backend
