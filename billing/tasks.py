"""Celery tasks of the billing app: thin, bounded, idempotent."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger("tasks." + __name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def holds_resolve_stale_task() -> int:
    """Periodic: settle or release holds left open; each one is reported in the log."""
    from billing.services import holds_resolve_stale

    report = holds_resolve_stale()
    if report:
        logger.warning("billing: resolved %d stale holds", len(report))
    return len(report)
