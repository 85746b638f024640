"""When a Celery task that called an upstream runs again: the one retry policy.

Shared by the apps' tasks (``accounts.tasks``, ``inference.tasks``), so it sits at the
bottom of the stack, next to the clients whose errors carry the ``retry_after`` it
honours. Not a Celery task module (``integrations`` is not an installed app).
"""

from __future__ import annotations

import random

from django.conf import settings


def retry_countdown(*, retries: int, retry_after: float | None) -> float:
    """Seconds before the next attempt.

    Exponential backoff (TASK_RETRY_BACKOFF_SECONDS × 2^retries, capped at
    TASK_RETRY_BACKOFF_MAX_SECONDS) with "equal jitter" (half fixed, half
    random), never earlier than the upstream's Retry-After, and never later
    than TASK_RETRY_MAX_DELAY_SECONDS, which
    settings keep below the broker's visibility timeout (a longer countdown
    would be redelivered as a duplicate) and the reconcile window (a queued
    generation waiting longer would be re-enqueued).
    """
    base = min(
        settings.TASK_RETRY_BACKOFF_MAX_SECONDS,
        settings.TASK_RETRY_BACKOFF_SECONDS * (2**retries),
    )
    countdown = base / 2 + random.uniform(0, base / 2)  # noqa: S311 (jitter, not crypto)
    if retry_after is not None:
        countdown = max(countdown, retry_after)
    countdown = min(countdown, settings.TASK_RETRY_MAX_DELAY_SECONDS)
    return round(float(countdown), 3)
