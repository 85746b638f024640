"""What a Stripe failure means for money, as a small tree (house style R9).

* ``StripeCardError``: the card was refused (declined, authentication failed). Terminal;
  ``message`` is Stripe's text for the cardholder, safe to show.
* ``StripeUnavailableError``: Stripe could not be reached or answered 5xx/429. Retryable;
  whether a create went through is unknown, so callers look the object up again.
* ``StripeRequestError``: any other refusal (4xx: a bad id, a bad key). Terminal.
* ``StripeSignatureError``: a webhook body whose signature does not verify.
"""

from __future__ import annotations


class StripeError(Exception):
    retryable = False

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class StripeCardError(StripeError):
    pass


class StripeUnavailableError(StripeError):
    retryable = True


class StripeRequestError(StripeError):
    pass


class StripeSignatureError(StripeError):
    pass
