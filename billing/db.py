"""Exact wei sums on both databases.

PostgreSQL sums NUMERIC(78,0) exactly. SQLite's ``SUM`` goes through REAL (or
fails with "integer overflow" past 2**63), so on SQLite ``WeiSum`` calls
``pixelhouse_wei_sum``, an aggregate written in Python with ``int`` arithmetic
and registered on every new SQLite connection (``BillingConfig.ready``). It
returns the total as digit text, so it is never narrowed to 64 bits or a double.
A total may exceed 2**256 - 1 (a sum of many maximal values), so the result is
an unbounded ``int``, not a ``WeiField`` value.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import connection, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import RawSQL

SQLITE_WEI_SUM = "pixelhouse_wei_sum"
_DIGITS = re.compile(r"-?[0-9]+", re.ASCII)


class _ExactSum:
    """SQLite aggregate: exact integer sum of digit text (or integers)."""

    def __init__(self) -> None:
        self.total = 0
        self.seen = False

    def step(self, value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError("pixelhouse_wei_sum refuses non-integer input")
        if isinstance(value, str):
            if not _DIGITS.fullmatch(value):
                raise ValueError("pixelhouse_wei_sum refuses non-digit text")
            value = int(value)
        if not isinstance(value, int):
            raise TypeError("pixelhouse_wei_sum refuses non-integer input")
        self.total += value
        self.seen = True

    def finalize(self) -> str | None:
        return str(self.total) if self.seen else None


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: install the exact aggregate on SQLite connections."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate(SQLITE_WEI_SUM, 1, _ExactSum)


class ExactIntegerField(models.Field[int | None, int | None]):
    """Output type of exact sums: an ``int`` of any size (Decimal or digit text in the DB)."""

    def from_db_value(
        self, value: Any, expression: Any, connection: BaseDatabaseWrapper
    ) -> int | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError("exact sum of wei is not an integer")
            return int(value)
        if isinstance(value, str):
            if not _DIGITS.fullmatch(value):
                raise ValueError("exact sum returned non-digit text")
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"exact sum returned {type(value).__name__}")


class WeiSum(models.Aggregate):
    """``SUM`` of a wei column, exact on PostgreSQL and SQLite; ``None`` for no rows."""

    function = "SUM"
    name = "WeiSum"
    allow_distinct = False
    output_field = ExactIntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return super().as_sql(compiler, connection, function=SQLITE_WEI_SUM, **extra_context)


def values_in(values: Sequence[str | uuid.UUID], *, uuids: bool = False) -> RawSQL:
    """The right side of a large ``__in`` as one bound parameter (``field__in=values_in(…)``).

    Django binds and prepares every element of an ``__in`` list, which dominates a bulk
    join of thousands of ids; this binds one array (PostgreSQL ``unnest(%s::text[])`` /
    ``uuid[]``) or one JSON list (SQLite ``json_each``; UUIDs as the 32 hex digits the
    column stores)."""
    if connection.vendor == "postgresql":
        # One array literal (text) rather than a list: psycopg dumps a list element by
        # element in Python, which costs more than the query for thousands of ids.
        kind = "uuid" if uuids else "text"
        return RawSQL(f"SELECT unnest(%s::{kind}[])", [_array_literal(values)])  # noqa: S611
    texts = [value.hex if isinstance(value, uuid.UUID) else value for value in values]
    return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(texts)])


def _array_literal(values: Sequence[str | uuid.UUID]) -> str:
    """PostgreSQL array input syntax: every element double-quoted, ``\\`` and ``"`` escaped."""
    return (
        "{"
        + ",".join(
            '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values
        )
        + "}"
    )


@contextmanager
def server_side_binding() -> Iterator[None]:
    """PostgreSQL: run the block's statements with server-side parameter binding.

    The project's connections bind client-side (Django's default for psycopg 3: every
    parameter is quoted into the SQL text in Python), which dominates bulk statements
    (a 5,000-element array, a 500-row upsert). Django supports server-side binding
    (``OPTIONS["server_side_binding"]``); this switches the open connection's cursor
    factory to it for one block (the usage sync's bulk writes) and back. Elsewhere a
    no-op."""
    if connection.vendor != "postgresql":
        yield
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    previous = raw.cursor_factory
    raw.cursor_factory = psycopg.Cursor
    try:
        yield
    finally:
        raw.cursor_factory = previous
