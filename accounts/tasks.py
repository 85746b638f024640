"""Celery tasks of the accounts app: thin wrappers over accounts.services."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from accounts import services
from integrations.pymthouse import PymthouseError
from integrations.task_retry import retry_countdown

logger = logging.getLogger("tasks." + __name__)

PROVISION_MAX_RETRIES = 5


class ProvisionUserTask(Task):  # type: ignore[type-arg]
    """A bug or a configuration error ends provisioning ``failed`` (retryable from the admin)
    instead of leaving it ``pending`` for the sweep to re-enqueue forever."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        user_id = kwargs.get("user_id") or (args[0] if args else None)
        if user_id is not None:
            services.user_provision_fail(
                user_id=int(user_id), error=f"internal error ({type(exc).__name__})"
            )


@shared_task(
    bind=True,
    base=ProvisionUserTask,
    acks_late=True,  # user_provision is an idempotent upsert
    reject_on_worker_lost=True,
    max_retries=PROVISION_MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
)
def provision_user_task(self: Task, user_id: int) -> None:  # type: ignore[type-arg]
    try:
        services.user_provision(user_id=user_id)
    except PymthouseError as exc:
        if exc.retryable and self.request.retries < PROVISION_MAX_RETRIES:
            countdown = retry_countdown(retries=self.request.retries, retry_after=exc.retry_after)
            logger.info(
                "provisioning user %s: %s; retry %d in %.1fs",
                user_id,
                type(exc).__name__,
                self.request.retries + 1,
                countdown,
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
        services.user_provision_fail(user_id=user_id, error=exc)


@shared_task(expires=240)
def provision_pending_users_task() -> int:
    return services.users_provision_pending()


#: A hard bound on one delivery's attempts; the real bound is WEBHOOK_RETRY_WINDOW_SECONDS
#: (a day of exponential backoff is about 35 attempts at the defaults).
WEBHOOK_MAX_ATTEMPTS = 60


@shared_task(bind=True, max_retries=WEBHOOK_MAX_ATTEMPTS, soft_time_limit=60, time_limit=90)
def webhook_delivery_send_task(self: Task, delivery_id: int) -> None:  # type: ignore[type-arg]
    """One attempt at a webhook delivery; the service says when (if ever) to try again.

    Its only argument is the delivery's id: the secret is read from the database when
    the POST is signed.
    """
    from accounts.webhooks import webhook_delivery_attempt

    countdown = webhook_delivery_attempt(delivery_id=delivery_id)
    if countdown is not None and not self.request.is_eager:
        # Eager (tests) would retry at once, in the caller's stack: the delivery stays
        # pending with its next_attempt_at, for a later call or the resend sweep.
        raise self.retry(countdown=countdown)


@shared_task(expires=240)
def webhook_deliveries_resend_due_task() -> int:
    from accounts.webhooks import webhook_deliveries_resend_due

    return webhook_deliveries_resend_due()
