"""Writes and workflows for image generations, one module per use case.

* ``admission``: ``generation_create`` (validation, the atomic admission step)
* ``run``: ``generation_run`` (one attempt: credentials, Livepeer, outcome)
* ``transitions``: every state change, each conditional on the owning attempt
* ``delete``: ``generation_delete``
* ``owner_actions``: ``generation_cancel_by_owner``, ``generation_retry``
* ``idempotency``: ``Idempotency-Key`` on submits (claim, complete, release, purge)
* ``reconcile``: ``generations_reconcile`` (lost messages, abandoned runs) and
  ``holds_resolve_stale`` (billing holds their hooks left open)

Money rule: at most one ticket request per generation, ever. The payment is
claimed in the database by a conditional UPDATE immediately before the signer
is asked for a ticket, and only released when the signer definitely refused.
An attempt that finds the claim set never pays again.
"""

from __future__ import annotations

from inference.services.admission import (
    SEED_MAX,
    GenerationLimits,
    generation_admit_step,
    generation_create,
    generation_limits,
)
from inference.services.delete import generation_delete
from inference.services.failures import FAILURE_MESSAGES
from inference.services.idempotency import (
    IdempotencyClaim,
    IdempotentReplay,
    idempotent_request_begin,
    idempotent_request_complete,
    idempotent_request_release,
    idempotent_requests_purge,
    request_fingerprint,
)
from inference.services.owner_actions import (
    ALREADY_PAID_MESSAGE,
    RETRYABLE_STATUSES,
    generation_cancel_by_owner,
    generation_retry,
)
from inference.services.reconcile import generations_reconcile, holds_resolve_stale
from inference.services.run import generation_run
from inference.services.transitions import (
    AttemptPaymentGuard,
    generation_fail,
    generation_fail_unexpected,
    generation_payment_confirm,
)

__all__ = [
    "ALREADY_PAID_MESSAGE",
    "RETRYABLE_STATUSES",
    "FAILURE_MESSAGES",
    "SEED_MAX",
    "AttemptPaymentGuard",
    "GenerationLimits",
    "IdempotencyClaim",
    "IdempotentReplay",
    "generation_admit_step",
    "generation_cancel_by_owner",
    "generation_create",
    "generation_delete",
    "generation_fail",
    "generation_fail_unexpected",
    "generation_limits",
    "generation_payment_confirm",
    "generation_retry",
    "generation_run",
    "generations_reconcile",
    "holds_resolve_stale",
    "idempotent_request_begin",
    "idempotent_request_complete",
    "idempotent_request_release",
    "idempotent_requests_purge",
    "request_fingerprint",
]
