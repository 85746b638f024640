"""A task for tests/config/test_worker_connections.py, imported by a real worker
(``celery worker --include``): how many database connections its process has opened."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.backends.signals import connection_created

from config.celery import app

_opened = 0


def _count(sender: Any, **kwargs: Any) -> None:
    global _opened
    _opened += 1


connection_created.connect(_count)


@app.task(name="tests.connection_probe")
def connection_probe(path: str) -> None:
    """Use the database, then append ``<pid> <connections opened so far> <backend pid>``
    to ``path`` (the backend pid on PostgreSQL, else 0)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        else:
            cursor.execute("SELECT 0")
        (backend,) = cursor.fetchone()
    with Path(path).open("a") as out:
        out.write(f"{os.getpid()} {_opened} {backend}\n")
