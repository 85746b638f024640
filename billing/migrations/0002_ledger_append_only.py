"""Database triggers that make ledger entries append-only (schema, not data).

PostgreSQL refuses UPDATE and DELETE of ``billing_ledgerentry`` rows (TRUNCATE, used
only by test flushes, is a statement the row triggers do not see). SQLite refuses
UPDATE; its test flush deletes rows one by one, so DELETE is refused by the model
and queryset guards only. A later migration that rebuilds the table on SQLite must
recreate these triggers.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

MESSAGE = "billing ledger is append-only: add a correction entry instead"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION billing_ledgerentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{MESSAGE}';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledgerentry_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS billing_ledgerentry_no_update ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_ledgerentry_append_only();
"""
SQLITE_UP = f"""
CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS billing_ledgerentry_no_update;"


def _run(schema_editor: Any, *, up: bool) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP if up else POSTGRES_DOWN)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_UP if up else SQLITE_DOWN)


def forwards(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, up=True)


def backwards(apps: Any, schema_editor: Any) -> None:
    _run(schema_editor, up=False)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_ledger")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
