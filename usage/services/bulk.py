"""Set-based load of new manifest rows (the bulk of a first full sync).

PostgreSQL: ``COPY`` into a per-connection temporary staging table (emptied at each
commit), then one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into the mirror, so the
natural key still decides what is new and a replayed chunk inserts nothing. SQLite: one
``executemany`` of ``INSERT … ON CONFLICT DO NOTHING``. Either way the values go through
the columns' own ``get_db_prep_value`` (wei as NUMERIC on PostgreSQL, zero-padded text on
SQLite), never through model instances. Runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, cast

from django.db import connection
from django.db.models import Field

from billing.fields import wei_text
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
_STAGE = "usage_manifest_stage"
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
    """Insert ``rows`` that are not in the mirror yet (by natural key)."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        _insert_postgresql(rows)
    else:
        _insert_generic(rows)


def _insert_postgresql(rows: Iterable[Row]) -> None:
    columns = ", ".join(COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        cursor.execute(f"TRUNCATE {_STAGE}")
        with cursor.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            # constant identifiers only (the model's table, COLUMNS), no data
            f"INSERT INTO {_table()} ({columns}) SELECT {columns} FROM {_STAGE}"  # noqa: S608
            " ON CONFLICT (external_user_id, manifest_id) DO NOTHING"
        )
        cursor.execute(f"TRUNCATE {_STAGE}")


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
