"""The ledger's append-only trigger on SQLite, for migrations that rebuild the table.

SQLite changes a CHECK constraint by rebuilding the table, which drops the trigger that
``0002_ledger_append_only`` created; every such migration (0013, 0015–0018) puts it back
with :func:`sqlite_trigger_recreate`. The leading underscore keeps Django's migration
loader from taking this module for a migration. PostgreSQL keeps its trigger through
``ALTER TABLE`` and needs nothing.
"""

from typing import Any

SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
BEGIN SELECT RAISE(ABORT, 'billing ledger is append-only: add a correction entry instead'); END;
"""


def sqlite_trigger_recreate(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER)
