"""The image bench (``python -m bench``): its client, its counting and its report.

The client is tested against the production web process (Django under ASGI) and a real
Celery worker over loopback; the counting against the test database and in real
processes started with the bench's ``sitecustomize.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from bench.__main__ import parse_arguments
from bench.markdown import write_markdown
from bench.platform_run import PlatformClient, PlatformOptions, ServerSentEvent, login, sse_events
from bench.report import ConcurrencyRun, RunContext
from bench.sqlcount import (
    DIR_VARIABLE,
    ROLE_VARIABLE,
    EventLog,
    count_connection,
    counts_between,
    read_counts,
    statement_shape,
    write_sitecustomize,
    write_statements,
)
from bench.stats import Comparison, RunResult, Sample, StatementCounts
from inference.models import Generation, GenerationStatus
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl
from tests.web_server import running_web_server
from tests.worker import running_worker

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the event-stream reader --------------------------------------------------------


def test_sse_events_dispatch_on_a_blank_line_and_skip_comments_and_retry() -> None:
    lines = [
        "retry: 2000",
        "",
        "id: queued/queued",
        "event: generation",
        'data: {"status":"queued"}',
        "",
        ": keep-alive",
        "",
        "event: state",
        "data: first",
        "data: second",
        "",
        "event: dangling",  # no blank line after it: never dispatched
    ]

    assert list(sse_events(lines)) == [
        ServerSentEvent(event="generation", data='{"status":"queued"}', id="queued/queued"),
        ServerSentEvent(event="state", data="first\nsecond", id="queued/queued"),
    ]


# --- the platform client against the real web process and worker ------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_client_follows_each_generation_over_the_stream_on_one_kept_alive_connection(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    user = UserFactory(password="bench-test-password")
    site = tmp_path / "site"
    write_sitecustomize(site)

    def counting(role: str) -> dict[str, str]:
        return {
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]),
            DIR_VARIABLE: str(tmp_path),
            ROLE_VARIABLE: role,
        }

    with (
        running_worker(env=counting("worker")),
        running_web_server(env=counting("web")) as server,
    ):
        options = PlatformOptions(
            web_url=server.url,
            email=user.email,
            password="bench-test-password",
            width=512,
            height=512,
            model_id=None,
            timeout=30,
        )
        client = PlatformClient(options, login(options))
        samples = [client.generate(index) for index in (1, 2)]
        pool = client._thread_session().get_adapter(server.url).poolmanager
        connections = sum(pool.pools[key].num_connections for key in pool.pools.keys())

    generations = Generation.objects.filter(owner=user)
    assert [g.status for g in generations] == [GenerationStatus.SUCCEEDED] * 2
    assert connections == 1  # POST and stream of both images on one kept-alive connection
    for sample in samples:
        # The final event carried the whole generation: its timestamps are in the sample.
        assert sample.stages["events"] >= 2  # the first whole generation, then the last
        assert sample.stages["server_total"] > 0
        assert sample.stages["push_delay"] >= 0
        assert sample.end_to_end > sample.stages["server_total"]
    counts = read_counts(tmp_path)
    assert set(counts) == {"web", "worker"}  # every process of both roles counted
    for role in ("web", "worker"):
        assert counts[role]["n"] >= 1
        assert counts[role]["s"] > counts[role]["w"] >= 1  # each wrote, with reads too


# --- counting -----------------------------------------------------------------------


def _insert_then_fail(cursor: Any) -> None:
    with transaction.atomic():
        cursor.execute("INSERT INTO bench_count_probe VALUES (4)")
        raise RuntimeError


@pytest.mark.django_db(transaction=True)
def test_statements_and_write_transactions_are_counted_as_defined() -> None:
    events: list[str] = []
    began: list[str] = []
    shapes: list[str] = []
    wrappers_before = list(connection.execute_wrappers)
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_count_probe (n integer)")
    uninstall = count_connection(connection, events.append, began.append, shapes.append)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # a read outside atomic: no transaction counted
            cursor.execute("INSERT INTO bench_count_probe VALUES (1)")  # autocommit write
            with transaction.atomic():  # a read-only transaction is not a write one
                cursor.execute("SELECT n FROM bench_count_probe")
            with transaction.atomic():  # two writes and a savepoint: one write transaction
                cursor.execute("UPDATE bench_count_probe SET n = 2")
                with transaction.atomic():
                    cursor.execute("DELETE FROM bench_count_probe WHERE n = 3")
            with pytest.raises(RuntimeError):
                _insert_then_fail(cursor)  # rolled back: counted, it held the write lock
        assert count_connection(connection, events.append) is uninstall  # wrapped once
    finally:
        uninstall()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_count_probe")

    # SQLite opens each transaction with BEGIN IMMEDIATE through the cursor (settings'
    # transaction_mode); psycopg begins implicitly.
    begins = 3 if connection.vendor == "sqlite" else 0
    counts = Counter(events)
    assert counts["n"] == 2  # each count_connection call is a (re)connection
    assert counts["w"] == 3
    assert counts["c"] == begins + 2  # SAVEPOINT and RELEASE SAVEPOINT
    assert counts["s"] == 6 + begins + 2
    assert Counter(map(statement_shape, shapes)) == Counter(
        {
            "SELECT 1": 1,
            "INSERT bench_count_probe": 2,
            "SELECT bench_count_probe": 1,
            "UPDATE bench_count_probe": 1,
            "DELETE bench_count_probe": 1,
            "SAVEPOINT": 1,
            "RELEASE SAVEPOINT": 1,
            **({"BEGIN": begins} if begins else {}),
        }
    )
    assert began == [
        "INSERT INTO bench_count_probe VALUES (1)",
        "UPDATE bench_count_probe SET n = 2",
        "INSERT INTO bench_count_probe VALUES (4)",
    ]
    assert connection.execute_wrappers == wrappers_before  # nothing left behind
    assert "commit" not in vars(connection)


def test_a_statement_shape_is_its_verb_and_first_table() -> None:
    assert statement_shape('SELECT "u"."id" FROM "accounts_user" WHERE "u"."id" = %s') == (
        "SELECT accounts_user"
    )
    assert statement_shape('INSERT INTO "inference_generation" ("id") VALUES (%s)') == (
        "INSERT inference_generation"
    )
    assert statement_shape('UPDATE "inference_generation" SET "stage" = %s') == (
        "UPDATE inference_generation"
    )
    assert statement_shape('  ROLLBACK TO SAVEPOINT "s1"') == "ROLLBACK TO SAVEPOINT"
    assert statement_shape("BEGIN IMMEDIATE") == "BEGIN"
    assert statement_shape("SELECT  1") == "SELECT 1"


def test_counts_are_summed_by_role_and_differenced_between_two_reads(tmp_path: Path) -> None:
    web, worker = EventLog(tmp_path, "web"), EventLog(tmp_path, "worker")
    for kind in "nsswsc":
        web.record(kind)
    before = read_counts(tmp_path)
    worker.record("n")
    worker.record("s")
    worker.record("w")
    worker.write_began('UPDATE "inference_generation"\n   SET "stage" = %s WHERE x')
    web.record("s")
    (tmp_path / f"worker-{os.getpid() + 1}.log").write_text("s\ns\n")  # a second process

    assert before == {"web": Counter({"s": 3, "n": 1, "w": 1, "c": 1})}
    assert counts_between(before, read_counts(tmp_path)) == {
        "web": {"s": 1, "c": 0, "w": 0, "n": 0},
        "worker": {"s": 3, "c": 0, "w": 1, "n": 1},
    }
    assert write_statements(tmp_path) == {
        "worker": Counter({'UPDATE "inference_generation" SET "stage" = %s WHERE x': 1})
    }


def test_the_sitecustomize_counts_a_real_process_and_only_when_asked(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_sitecustomize(site)
    script = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT 1')\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "BENCH_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PIXELHOUSE_VAR_DIR": str(tmp_path / "var"),
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]),
        }
    )
    run: dict[str, Any] = {"cwd": REPO_ROOT, "check": True, "timeout": 60}
    subprocess.run([sys.executable, "-c", script], env=env, **run)
    assert read_counts(tmp_path) == {}  # without BENCH_SQLCOUNT_DIR it does nothing

    env.update({DIR_VARIABLE: str(tmp_path), ROLE_VARIABLE: "web"})
    subprocess.run([sys.executable, "-c", script], env=env, **run)
    assert read_counts(tmp_path) == {"web": Counter({"n": 1, "s": 1})}


# --- arguments and report -----------------------------------------------------------


def test_both_concurrencies_by_default_and_each_value_once() -> None:
    assert parse_arguments([]).concurrency == [1, 6]
    assert parse_arguments(["--concurrency", "6", "1", "6"]).concurrency == [1, 6]
    assert parse_arguments([]).count_images == 12
    assert parse_arguments([]).broker_polling_interval is None
    for bad in (["--concurrency", "0"], ["--broker-polling-interval", "0"]):
        with pytest.raises(SystemExit):
            parse_arguments(bad)


def _result(label: str, end_to_end: list[float], wall: float) -> RunResult:
    return RunResult(
        label=label,
        samples=[Sample(end_to_end=value) for value in end_to_end],
        wall_seconds=wall,
        runner_latency=0.5,
        cpu_seconds={"web": 0.3},
    )


def test_the_section_reports_both_concurrencies_and_the_counts_and_keeps_other_sections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(
        "old preamble\n<!-- bench:begin sqlite-filesystem -->\nold\n"
        "<!-- bench:end sqlite-filesystem -->\n\n## Usage mirror\n\nkept as it is\n"
    )
    runs = [
        ConcurrencyRun(
            concurrency=concurrency,
            comparison=Comparison(
                platform=_result("platform", [0.6, 0.7, 0.8], 3.0),
                floor=_result("floor", [0.55, 0.55, 0.6], 2.0),
            ),
            load_before="1.00 / 1.00 / 1.00",
            load_after="2.00 / 1.50 / 1.10",
        )
        for concurrency in (1, 6)
    ]
    statements = [
        StatementCounts(
            concurrency=6,
            images=4,
            by_role={"web": {"s": 40, "c": 8, "w": 4, "n": 8}, "worker": {"s": 60, "w": 24}},
            writes={"worker": {"UPDATE a": 8, "INSERT b": 16}, "web": {"INSERT c": 4}},
            shapes={"web": {"SELECT a": 4, "BEGIN": 8}, "worker": {"SELECT a": 12}},
        )
    ]
    context = RunContext(
        arguments={
            "n": 3,
            "rounds": 1,
            "concurrency": [1, 6],
            "runner_latency": 0.5,
            "width": 512,
            "height": 512,
            "model": "m",
            "web_workers": 4,
            "workers": 2,
            "worker_concurrency": 4,
            "count_images": 4,
        },
        backends={
            "database_vendor": "sqlite",
            "database_version": "3",
            "database_location": "temporary var dir",
            "cache_backend": "DatabaseCache",
            "broker": "filesystem",
            "broker_polling_interval": 0.1,
            "stream_poll_seconds": 0.25,
        },
        warmup=0,
        load_before="0.50 / 0.50 / 0.50",
    )

    write_markdown(path, runs, statements, context)

    text = path.read_text()
    assert "old preamble" not in text
    assert text.endswith("## Usage mirror\n\nkept as it is\n")
    # overhead p50 200 vs 50 ms = 4x; throughput 1/2 s vs 1/3 s = 1.5x
    summary = "| 200 / 290 / 298 | 50 / 95 / 99 | 4.00x / 3.05x / 3.01x | 1.50x |"
    for concurrency in (1, 6):
        assert f"| {concurrency} {summary} 1.00 / 1.00 / 1.00 → 2.00 / 1.50 / 1.10 |" in text
        assert f"#### Concurrency {concurrency}" in text
    assert "| 6 | 25.0 (10.0 + 15.0) | 2.0 (2.0 + 0.0) | 7.0 (1.0 + 6.0) |" in text
    assert "| 2.0 (2.0 + 0.0) | 4 |" in text  # connections per image, images counted
    writes = [
        "| web | `INSERT c` | 1.00 |",
        "| worker | `INSERT b` | 4.00 |",  # by process, the most frequent first
        "| worker | `UPDATE a` | 2.00 |",
    ]
    assert "\n".join(writes) in text
    assert "| `SELECT a` | 1.00 | 3.00 |\n| `BEGIN` | 2.00 |  |" in text  # most first
    assert (
        "**Issue 16's targets at concurrency 6**: overhead p50 ≤ 2x: 4.00x, not met;"
        " overhead p95 ≤ 2.5x: 3.05x, not met; throughput ≤ 1.1x: 1.50x, not met;"
        " statements ≤ 30: 25.00, met; write transactions ≤ 6: 7.00, not met."
    ) in text
    assert "poll `GET" not in text
    assert "polls per generation" not in text
