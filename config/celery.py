"""The Celery application: configured from Django settings (CELERY_* keys)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("pixelhouse")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_recycle(sender: Any = None, **kwargs: Any) -> None:
    """Around every task, what Django does around every request: close a connection that
    is past ``CONN_MAX_AGE``, broken, or left with an error, and health-check the rest on
    their next use (``CONN_HEALTH_CHECKS``); keep the others open.

    Celery's Django fix-up would close every connection before and after every task
    (``celery/fixups/django.py`` ``_close_database``, celery 5.7), so each task paid a
    new database connection; ``CELERY_DB_REUSE_MAX`` in settings turns that off, and this
    handler takes its place. Eager tasks run inside the caller's request or transaction
    and are left alone, as the fix-up leaves them.
    """
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
