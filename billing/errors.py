"""Billing errors shown to people: a stable code, a user message and an HTTP status."""

from __future__ import annotations


class BillingError(Exception):
    """Base class; ``message`` is safe to show to the user it concerns."""

    code = "billing_error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class CreditRefusedError(BillingError):
    """The user may not start this generation (no credit, allowance used, suspended).

    Raised by ``generation_admit`` inside the admission transaction, so the
    generation row, its task and any upstream call never happen. The API answers 402.
    """

    code = "insufficient_credit"
    status = 402


class InsufficientFundsError(BillingError):
    """A deduct or correction would take the available balance below zero."""

    code = "insufficient_funds"
    status = 409


class IdempotencyConflictError(BillingError):
    """An idempotency key was reused for a different operation."""

    code = "idempotency_conflict"
    status = 409


class AmountOutOfRangeError(BillingError):
    """The result would leave 0 … 2**256 - 1 wei."""

    code = "amount_out_of_range"
    status = 422
