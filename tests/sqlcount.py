"""Counting SQL statements and write transactions in this process (issue 16's per-image
budget), with the bench's counter (``bench.sqlcount.count_connection``): every statement
is counted, and a write transaction is one that ran an INSERT, UPDATE or DELETE (or
``SELECT … FOR UPDATE``); a write outside ``atomic`` is its own autocommit transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, connections

from bench.sqlcount import count_connection


@dataclass
class SqlCount:
    statements: int = 0
    write_transactions: int = 0
    sql: list[str] = field(default_factory=list)

    def record(self, kind: str) -> None:
        if kind == "s":
            self.statements += 1
        elif kind == "w":
            self.write_transactions += 1


@contextmanager
def sql_counted() -> Iterator[SqlCount]:
    """Count this thread's default connection while the block runs."""
    count = SqlCount()
    uninstall = count_connection(
        connections[DEFAULT_DB_ALIAS], count.record, statement=count.sql.append
    )
    try:
        yield count
    finally:
        uninstall()
