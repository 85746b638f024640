"""What the network metered for a generation, reported by the usage mirror."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from django.db import connection
from django.db.models import Field

from inference.models import Generation

MAX_BIGINT = 2**63 - 1
_BATCH = 5000


@dataclass(frozen=True)
class MeteredCost:
    fee_wei: int
    network_fee_usd_micros: int


def generations_cost_record(*, costs: dict[uuid.UUID, MeteredCost]) -> int:
    """Record the metered cost of generations that have none yet; returns rows written.

    Rows are locked in primary-key order, and the caller takes no account lock before
    this (lock order everywhere: generation rows, then account rows; see
    docs/usage-mirror.md). A USD amount too large for the column is left empty.
    Set-based: on PostgreSQL the batch is locked (``SELECT … ORDER BY id FOR UPDATE``)
    then written by one ``UPDATE … FROM unnest(…)``; elsewhere one ``executemany``.
    """
    ids = sorted(costs, key=lambda pk: pk.int)
    written = 0
    for offset in range(0, len(ids), _BATCH):
        batch = ids[offset : offset + _BATCH]
        values = [
            (
                pk,
                costs[pk].fee_wei,
                usd if 0 <= (usd := costs[pk].network_fee_usd_micros) <= MAX_BIGINT else None,
            )
            for pk in batch
        ]
        written += (_record_postgresql if connection.vendor == "postgresql" else _record)(values)
    return written


_Values = list[tuple[uuid.UUID, int, int | None]]


def _record_postgresql(values: _Values) -> int:
    table = Generation._meta.db_table
    ids = [pk for pk, _, _ in values]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE id = ANY(%s) AND cost_wei IS NULL"  # noqa: S608
            " ORDER BY id FOR UPDATE",
            [ids],
        )
        cursor.execute(
            f"UPDATE {table} AS g SET cost_wei = v.wei, cost_usd_micros = v.usd"  # noqa: S608
            " FROM unnest(%s::uuid[], %s::numeric[], %s::bigint[]) AS v(id, wei, usd)"
            " WHERE g.id = v.id AND g.cost_wei IS NULL",
            [ids, [wei for _, wei, _ in values], [usd for _, _, usd in values]],
        )
        return int(cursor.rowcount)


def _record(values: _Values) -> int:
    fields = {name: Generation._meta.get_field(name) for name in ("id", "cost_wei")}
    prepare = {
        name: cast(Field[Any, Any], field).get_db_prep_save for name, field in fields.items()
    }
    quote = connection.ops.quote_name
    rows = [
        (prepare["cost_wei"](wei, connection), usd, prepare["id"](pk, connection))
        for pk, wei, usd in values
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {quote(Generation._meta.db_table)} SET cost_wei = %s,"  # noqa: S608
            " cost_usd_micros = %s WHERE id = %s AND cost_wei IS NULL",
            rows,
        )
        return int(cursor.rowcount)  # sqlite3 sums the rows of every execution
