"""Retrying a transaction that lost a deadlock (PostgreSQL picks one loser and aborts it).

Lock order everywhere is: generation rows first, then account rows (each in id order),
so the usage sync and a payment's confirm do not deadlock each other. A deadlock with
anything else still aborts one transaction; ``deadlock_retrying`` runs it again, a
few times, from the start. Only a whole transaction can be retried: inside an outer
``atomic`` block the error is raised (the outer transaction is already aborted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: PostgreSQL's SQLSTATE for "deadlock detected".
DEADLOCK_DETECTED = "40P01"


def is_deadlock(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(exc, OperationalError) and (
        getattr(cause, "sqlstate", None) == DEADLOCK_DETECTED
        or getattr(cause, "pgcode", None) == DEADLOCK_DETECTED
    )


def deadlock_retrying(work: Callable[[], T], *, what: str, attempts: int = 3) -> T:
    """``work()`` (one transaction), run again if it was chosen as a deadlock's loser."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except OperationalError as exc:
            if (
                not is_deadlock(exc)
                or attempt == attempts
                or transaction.get_connection().in_atomic_block
            ):
                raise
            logger.warning("%s lost a deadlock; retrying (attempt %d)", what, attempt + 1)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
