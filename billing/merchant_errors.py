"""Merchant mode: what each refusal of pymthouse's billing routes means, for the user
and for staff.

The real server's refusals (pymthouse/pymthouse@5ee7cfc7 ``src/app/api/v1/apps/[id]/
billing/wallet/top-up/route.ts``, ``…/billing/checkout/route.ts``,
``…/users/[externalUserId]/subscription/change/route.ts``; docs/upstream.md §P9):

* 503 ``Billing is not available right now``: the pymthouse deployment has no
  OpenMeter (or no Stripe key);
* 409 ``Merchant Stripe Connect is not ready to accept payments``: the app's Connected
  Account is not onboarded; 409 ``A payment method is required …``: no card saved;
* 400 ``owner_wallet_not_app_user``: the pymthouse app is in ``owner_rollup`` mode,
  where end users cannot pay (``BILLING_MODE`` says merchant: a misconfiguration);
* 404 ``Not found``: every auth failure on these routes (wrong M2M credentials or
  public app id);
* anything retryable (timeouts, 5xx other than 503, a refused connection).

The user is told, in words, that nothing was charged; staff get one log line at
ERROR naming what to fix (and the wallet's ``last_error`` in the admin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBillingUnavailableError,
    PymthouseConnectNotReadyError,
    PymthouseError,
    PymthouseNotFoundError,
    PymthouseOwnerWalletError,
    PymthousePaymentMethodRequiredError,
)

logger = logging.getLogger(__name__)

_NOTHING_CHARGED = "Nothing was charged."
#: 404s that are answers, not auth failures (``…/subscription`` DELETE, ``…/pending-change``).
_NOT_FOUND_MESSAGES = {
    "no_subscription": "You have no subscription to cancel.",
    "already_starter": "You're already on the starter plan.",
    "nothing_to_resume": "There's no cancellation to undo.",
}


@dataclass(frozen=True)
class MerchantRefusal:
    """One refusal: a stable ``code``, the user's message and the staff's."""

    code: str
    user_message: str
    staff_message: str


def merchant_refusal(exc: PymthouseError, *, action: str) -> MerchantRefusal:
    """The refusal ``exc`` (from a billing call doing ``action``) means; the client's
    narrowest classes first (``integrations.pymthouse.billing``)."""
    status, code = exc.status, exc.code or ""
    description = (exc.description or "").lower()
    if isinstance(exc, PymthouseBillingUnavailableError):
        return MerchantRefusal(
            "billing_unavailable",
            f"Payments are unavailable right now. {_NOTHING_CHARGED} Please try again later.",
            f"pymthouse {action}: 503, billing is not configured on the pymthouse "
            "deployment (no OpenMeter or no Stripe key)",
        )
    if isinstance(exc, PymthousePaymentMethodRequiredError):
        return MerchantRefusal(
            "payment_method_required",
            f"Add a card first, then choose the plan again. {_NOTHING_CHARGED}",
            f"pymthouse {action}: 409, the user has no saved card",
        )
    if isinstance(exc, PymthouseConnectNotReadyError):
        return MerchantRefusal(
            "connect_not_ready",
            f"Payments are not set up for this service yet. {_NOTHING_CHARGED}",
            f"pymthouse {action}: {status}, the app's Stripe Connect account is not ready "
            "(finish Connect onboarding in the pymthouse dashboard)",
        )
    if isinstance(exc, PymthouseOwnerWalletError):
        return MerchantRefusal(
            "owner_wallet_not_app_user",
            f"Payments are not available for this service. {_NOTHING_CHARGED}",
            f"pymthouse {action}: {status} {code}, the pymthouse app is in owner_rollup mode "
            "while BILLING_MODE=merchant (switch the app to merchant in pymthouse, or set "
            "BILLING_MODE=owner_rollup)",
        )
    if status == 400 and "externaluserid is required" in description:
        return MerchantRefusal(
            "not_merchant",
            f"Payments are not available for this service. {_NOTHING_CHARGED}",
            f"pymthouse {action}: 400, pymthouse wants an externalUserId (its app is "
            "merchant); the request did not carry one",
        )
    if isinstance(exc, PymthouseNotFoundError) and code in _NOT_FOUND_MESSAGES:
        return MerchantRefusal(code, _NOT_FOUND_MESSAGES[code], f"pymthouse {action}: 404 {code}")
    if isinstance(exc, PymthouseAuthError | PymthouseNotFoundError):
        return MerchantRefusal(
            "pymthouse_credentials",
            f"Payments are unavailable right now. {_NOTHING_CHARGED} Please try again later.",
            f"pymthouse {action}: {status} Not found, pymthouse refused our credentials "
            "(check PYMTHOUSE_PUBLIC_CLIENT_ID, PYMTHOUSE_M2M_CLIENT_ID and "
            "PYMTHOUSE_M2M_CLIENT_SECRET)",
        )
    if not exc.retryable and status is not None and 400 <= status < 500:
        shown = exc.description or "The payment service refused the request."
        return MerchantRefusal(
            "refused",
            f"{shown} {_NOTHING_CHARGED}",
            f"pymthouse {action}: {status} {exc.code or ''} {exc.description or ''}".strip(),
        )
    return MerchantRefusal(
        "pymthouse_unreachable",
        f"We couldn't reach the payment service. {_NOTHING_CHARGED} Please try again.",
        f"pymthouse {action}: {exc.message}",
    )


def staff_report(refusal: MerchantRefusal, *, user_id: int | None) -> None:
    """One ERROR line for staff (the log is where operators look first)."""
    logger.error(
        "merchant billing: %s (code %s, user %s)", refusal.staff_message, refusal.code, user_id
    )
