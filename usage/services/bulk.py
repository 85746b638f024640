"""Set-based writes of the usage sync (the bulk of a first full sync).

New manifest rows, PostgreSQL: ``COPY`` into a per-connection temporary staging table
(emptied at each commit), then one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into the
mirror, so the natural key still decides what is new and a replayed chunk inserts
nothing; a generation id that names no generation row any more (deleted) is written as
NULL by the same statement's join. The staged rows stay until the commit, so the
chunk's metered costs are recorded from them (``STAGE``,
``inference.metering_bulk.generations_cost_record_staged``). SQLite: one
``executemany`` of ``INSERT … ON CONFLICT DO NOTHING``. Either way the values go through
the columns' own ``get_db_prep_value`` (wei as NUMERIC on PostgreSQL, zero-padded text on
SQLite), never through model instances. Runs inside the caller's transaction.

Upserts of whole rows (the users' aggregates, drift), PostgreSQL: ``rows_upsert`` copies
them into a staging table shaped like the target and runs one ``INSERT … SELECT … ON
CONFLICT DO UPDATE``; elsewhere the caller's ``bulk_create(update_conflicts=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, cast

from django.db import connection
from django.db.models import Field, Model

from billing.fields import wei_text
from inference.models import Generation
from usage.models import UsageManifest

#: Columns written, in order (``flagged`` is always false for a new row).
COLUMNS = (
    "external_user_id",
    "manifest_id",
    "user_id",
    "generation_id",
    "fee_wei",
    "network_fee_usd_micros",
    "pipeline",
    "model_id",
    "day",
    "first_seen_at",
    "flagged",
)
STAGE = _STAGE = "usage_manifest_stage"
_STAGE_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (
    external_user_id varchar(128) NOT NULL,
    manifest_id varchar(200) NOT NULL,
    user_id bigint,
    generation_id uuid,
    fee_wei numeric(78, 0) NOT NULL,
    network_fee_usd_micros numeric(78, 0) NOT NULL,
    pipeline varchar(100) NOT NULL,
    model_id varchar(200) NOT NULL,
    day date NOT NULL,
    first_seen_at timestamptz NOT NULL,
    flagged boolean NOT NULL
) ON COMMIT DELETE ROWS
"""

#: One new row: the values of ``COLUMNS`` (Python values; prepared here).
Row = tuple[str, str, int | None, Any, int, int, str, str, date, datetime, bool]


def _table() -> str:
    return UsageManifest._meta.db_table


def manifests_insert(rows: Sequence[Row]) -> None:
    """Insert ``rows`` that are not in the mirror yet (by natural key); the caller passes
    existing generation ids only. PostgreSQL: ``manifests_stage`` then
    ``manifests_insert_staged`` instead."""
    if rows:
        _insert_generic(rows)


def manifests_stage(rows: Iterable[Row]) -> None:
    """PostgreSQL: ``COPY`` ``rows`` into ``STAGE`` (emptied first; emptied again at the
    commit)."""
    columns = ", ".join(COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        cursor.execute(f"TRUNCATE {_STAGE}")
        with cursor.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"ANALYZE {_STAGE}")


def manifests_insert_staged() -> None:
    """PostgreSQL: insert the staged rows that are not in the mirror yet (by natural key);
    a generation id with no generation row (deleted) is stored as NULL."""
    columns = ", ".join(COLUMNS)
    selected = ", ".join("g.id" if name == "generation_id" else f"s.{name}" for name in COLUMNS)
    with connection.cursor() as cursor, index_joins():
        cursor.execute(
            # constant identifiers only (the models' tables, COLUMNS), no data
            f"INSERT INTO {_table()} ({columns}) SELECT {selected} FROM {_STAGE} AS s"  # noqa: S608
            f" LEFT JOIN {Generation._meta.db_table} AS g ON g.id = s.generation_id"
            " ON CONFLICT (external_user_id, manifest_id) DO NOTHING"
        )


@contextmanager
def index_joins() -> Iterator[None]:
    """PostgreSQL: join a chunk's staged rows to a large table by probing its index.

    A chunk stages a few thousand to tens of thousands of rows; the generation table
    holds the app's history. With its default costs (pages on disk) the planner prefers
    a hash join that reads every generation row, once per statement per chunk, so the
    first full sync would grow with users × history. Hash and merge joins are turned off
    for the block (``SET LOCAL``) and back to the session's values after it. The same
    holds for a chunk's reads of the mirror by user (the table grows during the run, so its
    statistics lag). Elsewhere a no-op.

    On an error nothing is reset here: the statement failed, so the transaction (or its
    savepoint) is rolled back, which undoes ``SET LOCAL`` too, and the original error (a
    deadlock ``deadlock_retrying`` must recognise) is not hidden by a failing ``RESET``."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_hashjoin = off")
        cursor.execute("SET LOCAL enable_mergejoin = off")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET enable_hashjoin")
        cursor.execute("RESET enable_mergejoin")


def rows_upsert(
    *,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    conflict: Sequence[str],
    update: Sequence[str],
) -> None:
    """PostgreSQL: insert ``rows`` (Python values of ``columns``) into ``table``, or update
    ``update`` where ``conflict`` matches a row. The staging table is shaped like the
    target (its column types, no constraints) and emptied at each commit. Identifiers are
    the caller's constants (model tables and field columns), never data."""
    stage = f"usage_stage_{table}"
    names = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS"  # noqa: S608
            f" AS SELECT {names} FROM {table} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {stage}")
        with cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage}"  # noqa: S608
            f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET "
            + ", ".join(f"{name} = EXCLUDED.{name}" for name in update)
        )
        cursor.execute(f"TRUNCATE {stage}")


def _insert_generic(rows: Iterable[Row]) -> None:
    """SQLite: values prepared as its columns store them (``WeiField``: ``wei_text``;
    UUID: 32 hex digits; dates ISO; the one ``first_seen_at`` through its field once)."""
    meta = UsageManifest._meta
    quote = connection.ops.quote_name
    sql = (  # constant identifiers only (the model's table, COLUMNS), no data
        f"INSERT INTO {quote(_table())} ({', '.join(quote(name) for name in COLUMNS)})"  # noqa: S608
        f" VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        " ON CONFLICT (external_user_id, manifest_id) DO NOTHING"
    )
    seen_field = cast(Field[Any, Any], meta.get_field("first_seen_at"))
    moments: dict[datetime, Any] = {}
    prepared = []
    for ext, manifest_id, user_id, generation_id, wei, usd, pipeline, model, day, at, flag in rows:
        moment = moments.get(at)
        if moment is None:
            moment = moments[at] = seen_field.get_db_prep_save(at, connection)
        prepared.append(
            (
                ext,
                manifest_id,
                user_id,
                None if generation_id is None else generation_id.hex,
                wei_text(wei),
                wei_text(usd),
                pipeline,
                model,
                day.isoformat(),
                moment,
                flag,
            )
        )
    with connection.cursor() as cursor:
        cursor.executemany(sql, prepared)


def model_upsert(
    *,
    model: type[Model],
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert ``rows`` of ``model`` (attribute name → value, the same names in every row),
    or update the ``update`` attributes where the ``conflict`` ones match: on PostgreSQL
    through :func:`rows_upsert`'s staging COPY, elsewhere ``bulk_create`` with
    ``update_conflicts``."""
    if not rows:
        return
    names = list(rows[0])
    fields = {
        name: cast("Field[Any, Any]", model._meta.get_field(name))
        for name in (*names, *update, *conflict)
    }
    if connection.vendor == "postgresql":
        rows_upsert(
            table=model._meta.db_table,
            columns=[str(fields[name].column) for name in names],
            rows=([row[name] for name in names] for row in rows),
            conflict=[str(fields[name].column) for name in conflict],
            update=[str(fields[name].column) for name in update],
        )
        return
    model._default_manager.bulk_create(
        [model(**row) for row in rows],
        batch_size=2000,
        update_conflicts=True,
        unique_fields=[fields[name].name for name in conflict],
        update_fields=[fields[name].name for name in update],
    )
