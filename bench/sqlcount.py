"""Counting SQL statements and write transactions in the stack's real processes (issue 16).

For the counting batches only, the bench restarts the web and worker processes with a
``sitecustomize.py`` first on ``PYTHONPATH`` (written by :func:`write_sitecustomize`)
and ``BENCH_SQLCOUNT_DIR`` / ``BENCH_SQLCOUNT_ROLE`` set. At interpreter start it calls
:func:`install_from_environment`, which connects to Django's ``connection_created``
signal; every database connection a process opens then gets an execute wrapper that
appends one line per event to ``<dir>/<role>-<pid>.log`` (line-buffered, so a killed
process loses nothing it counted):

* ``s``: a statement (every ``cursor.execute``/``executemany`` through Django);
* ``c``: of those, transaction control (``BEGIN``, ``SAVEPOINT``, ``RELEASE`` /
  ``ROLLBACK TO SAVEPOINT``), written in addition to its ``s``;
* ``w``: a write transaction begins: the first INSERT, UPDATE or DELETE (or
  ``SELECT … FOR UPDATE``, a write lock on SQLite and row locks on Postgres) since the
  outermost ``atomic`` block began, or any such statement outside ``atomic`` (its own
  autocommit transaction). A rolled-back one counts too: it held the locks;
* ``n``: a new database connection.

The statement that began each write transaction is also appended, cut to
:data:`SQL_PREFIX_CHARS` characters, to ``<dir>/<role>-<pid>.sql`` (to see which they are),
and every statement's shape (:func:`statement_shape`: its verb and first table) to
``<role>-<pid>.shape`` (to see where the statements go).

The timed batches run in processes without any of this. :func:`read_counts` sums the
files by role and kind; the bench reads them before and after a counting batch and
divides the difference by the batch's images.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

DIR_VARIABLE = "BENCH_SQLCOUNT_DIR"
ROLE_VARIABLE = "BENCH_SQLCOUNT_ROLE"
KINDS = ("s", "c", "w", "n")
SQL_PREFIX_CHARS = 100
SHAPE_CHARS = 50
_VERB = re.compile(r"^\s*(\w+(?: TO SAVEPOINT| SAVEPOINT)?)", re.IGNORECASE)
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b|\bFOR (NO KEY )?UPDATE\b", re.IGNORECASE)
CONTROL = re.compile(
    r"^\s*(BEGIN|SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.IGNORECASE
)

SITECUSTOMIZE = """\
# Written by bench/sqlcount.py for the bench's counting processes only.
import os

if os.environ.get("{variable}"):
    from bench.sqlcount import install_from_environment

    install_from_environment()
"""


def write_sitecustomize(directory: Path) -> Path:
    """A ``sitecustomize.py`` in ``directory``, for the front of ``PYTHONPATH``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sitecustomize.py"
    path.write_text(SITECUSTOMIZE.format(variable=DIR_VARIABLE))
    return path


class EventLog:
    """Appends one line per event to ``<directory>/<role>-<pid>.log``, and the statement
    that began each write transaction to ``<role>-<pid>.sql``.

    Opened per pid, so prefork children (forked after the parent imported this) each
    write their own files.
    """

    def __init__(self, directory: Path, role: str) -> None:
        self.directory = directory
        self.role = role
        self._lock = threading.Lock()
        self._pid = 0
        self._files: dict[str, IO[str]] = {}

    def _write(self, suffix: str, line: str) -> None:
        with self._lock:
            pid = os.getpid()
            if pid != self._pid:
                self._pid, self._files = pid, {}
            if suffix not in self._files:
                path = self.directory / f"{self.role}-{pid}{suffix}"
                self._files[suffix] = path.open("a", buffering=1)
            self._files[suffix].write(line + "\n")

    def record(self, kind: str) -> None:
        self._write(".log", kind)

    def write_began(self, sql: str) -> None:
        self._write(".sql", " ".join(sql.split())[:SQL_PREFIX_CHARS])

    def statement(self, sql: str) -> None:
        self._write(".shape", statement_shape(sql))


def statement_shape(sql: str) -> str:
    """``VERB table`` of a statement (``SELECT inference_generation``), the verb alone
    for transaction control (``SAVEPOINT``, ``RELEASE SAVEPOINT``, ``BEGIN``), or the
    start of a query that names no table."""
    verb = _VERB.match(sql)
    name = verb.group(1).upper() if verb else "?"
    if name in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}:
        table = _TABLE.search(sql)
        if table:
            return f"{name} {table.group(1)}"
        return " ".join(sql.split())[:SHAPE_CHARS]  # no table: its own words
    return name


def count_connection(
    connection: Any,
    record: Callable[[str], None],
    write_began: Callable[[str], None] | None = None,
    statement: Callable[[str], None] | None = None,
) -> Callable[[], None]:
    """Count ``connection``'s statements and write transactions into ``record``.

    Idempotent: a Django connection object is reused across reconnects (the ASGI web
    process closes it after every request), and is wrapped once. Returns a function
    that removes the counting again (for tests; the bench's processes never do).
    """
    record("n")
    if getattr(connection, "_bench_sqlcount", None) is not None:
        return connection._bench_sqlcount  # type: ignore[no-any-return]
    state = {"dirty": False}

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        record("s")
        if statement is not None:
            statement(sql)
        if CONTROL.match(sql):
            record("c")
        elif WRITE.search(sql) and (not connection.in_atomic_block or not state["dirty"]):
            state["dirty"] = connection.in_atomic_block
            record("w")
            if write_began is not None:
                write_began(sql)
        return execute(sql, params, many, context)

    original_commit, original_rollback = connection.commit, connection.rollback

    def commit() -> None:
        state["dirty"] = False
        original_commit()

    def rollback() -> None:
        state["dirty"] = False
        original_rollback()

    def uninstall() -> None:
        connection.execute_wrappers.remove(wrapper)
        del connection.commit, connection.rollback, connection._bench_sqlcount

    connection.commit, connection.rollback = commit, rollback
    connection.execute_wrappers.insert(0, wrapper)
    connection._bench_sqlcount = uninstall
    return uninstall


def install(directory: Path, role: str) -> None:
    from django.db.backends.signals import connection_created

    log = EventLog(directory, role)

    def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
        count_connection(connection, log.record, log.write_began, log.statement)

    # A strong reference: the handler must live as long as the process.
    connection_created.connect(on_connection_created, weak=False)


def install_from_environment() -> None:
    install(Path(os.environ[DIR_VARIABLE]), os.environ.get(ROLE_VARIABLE, "process"))


def write_statements(directory: Path, suffix: str = ".sql") -> dict[str, Counter[str]]:
    """The statements that began write transactions so far, by role, with how often
    (with ``suffix=".shape"``: every statement's shape)."""
    totals: dict[str, Counter[str]] = {}
    for path in sorted(directory.glob(f"*-*{suffix}")):
        role = path.name.rsplit("-", 1)[0]
        totals.setdefault(role, Counter()).update(path.read_text().splitlines())
    return totals


def read_counts(directory: Path) -> dict[str, Counter[str]]:
    """Events so far, by role (the file name before the pid) and kind."""
    totals: dict[str, Counter[str]] = {}
    for path in sorted(directory.glob("*-*.log")):
        role = path.name.rsplit("-", 1)[0]
        counts = totals.setdefault(role, Counter())
        counts.update(line for line in path.read_text().split() if line in KINDS)
    return totals


def counts_between(
    before: dict[str, Counter[str]], after: dict[str, Counter[str]]
) -> dict[str, dict[str, int]]:
    """Per role and kind, what happened between two :func:`read_counts`."""
    return {
        role: {kind: counts[kind] - before.get(role, Counter())[kind] for kind in KINDS}
        for role, counts in after.items()
    }
