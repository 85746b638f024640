"""Counting SQL statements and write transactions (issue 16's per-image budget).

``sql_counted()`` wraps the default connection: every statement is counted, and a
transaction is a *write* transaction when it ran at least one INSERT, UPDATE or DELETE
(or ``SELECT … FOR UPDATE``, which takes a write lock on SQLite and row locks on
Postgres). A write outside ``atomic`` is its own autocommit transaction; inside one, the
outermost block's commit ends it. Savepoints are not transactions and are not counted,
but their statements are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b|\bFOR (NO KEY )?UPDATE\b", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)


@dataclass
class SqlCount:
    statements: int = 0
    savepoint_statements: int = 0
    write_transactions: int = 0
    sql: list[str] = field(default_factory=list)
    _dirty: bool = False

    @property
    def data_statements(self) -> int:
        """Statements that are not savepoint bookkeeping."""
        return self.statements - self.savepoint_statements


@contextmanager
def sql_counted() -> Iterator[SqlCount]:
    count = SqlCount()

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        count.statements += 1
        count.sql.append(sql)
        if _SAVEPOINT.match(sql):
            count.savepoint_statements += 1
        elif _WRITE.search(sql):
            if not connection.in_atomic_block:
                count.write_transactions += 1
            elif not count._dirty:
                count._dirty = True
                count.write_transactions += 1
        return execute(sql, params, many, context)

    original_commit, original_rollback = connection.commit, connection.rollback

    def commit() -> None:
        count._dirty = False
        original_commit()

    def rollback() -> None:
        count._dirty = False  # a rolled-back write transaction still counts: it locked
        original_rollback()

    connection.commit, connection.rollback = commit, rollback  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield count
    finally:
        del connection.commit, connection.rollback
