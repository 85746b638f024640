"""The metered cost of many generations at once, from rows already on the server.

``inference.services.metering.generations_cost_record`` takes the costs as Python
values (arrays bound per batch). The usage sync's first full run has them on the server
already: its chunk's new manifest rows sit in a temporary staging table
(``usage.services.bulk``), so on PostgreSQL the costs are recorded from that table in
two statements per chunk, whatever its size, with the same rules: only generations with
no cost yet, the rows locked in primary-key order first (lock order everywhere:
generation rows, then account rows; docs/usage-mirror.md), a USD amount too large for
the column left empty.
"""

from __future__ import annotations

from django.db import connection

from inference.models import Generation

MAX_BIGINT = 2**63 - 1


def generations_cost_record_staged(*, table: str) -> int:
    """PostgreSQL: record ``table``'s ``(generation_id, fee_wei, network_fee_usd_micros)``
    on the generations that have no cost yet; returns rows written. ``table`` is a
    constant identifier of the caller's (a temporary table), never data."""
    target = Generation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT g.id FROM {target} AS g JOIN {table} AS s ON s.generation_id = g.id"  # noqa: S608
            " WHERE g.cost_wei IS NULL ORDER BY g.id FOR UPDATE OF g"
        )
        cursor.execute(
            f"UPDATE {target} AS g SET cost_wei = s.fee_wei,"  # noqa: S608
            " cost_usd_micros = CASE WHEN s.network_fee_usd_micros <= %s"
            " THEN s.network_fee_usd_micros::bigint END"
            f" FROM {table} AS s WHERE s.generation_id = g.id AND g.cost_wei IS NULL",
            [MAX_BIGINT],
        )
        return int(cursor.rowcount)
