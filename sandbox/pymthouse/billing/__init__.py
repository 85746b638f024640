"""End-user billing routes: wallet, state, top-up, plans, checkout, subscription, invoices.

Built to pymthouse/pymthouse@5ee7cfc7 (docs/upstream.md §P9) and its live
transcript against the real local server (T#n below):

* auth (§3): **M2M-strict** (``authorizeOwnerWalletM2m``,
  ``src/lib/billing/owner-wallet-m2m-auth.ts``) on ``billing/wallet*`` and
  ``billing/state``: Basic ``m2m_…`` only. **App-client-or-session**
  (``authorizeAppForBilling``, ``src/lib/billing/app-auth.ts``) on ``plans``,
  ``billing/checkout`` and ``users/{ext}/…``: Basic of ``m2m_…`` *or* ``web_…``. Every
  auth failure is ``404 {"error":"Not found"}`` (T#3–T#9, T#89, T#90);
* "billing off" (no OpenMeter/Stripe: the default, like the local server) answers what
  T#10–T#127 show; "billing on" is the sandbox's ``BillingBook.enabled`` plus the runtime
  ``openMeterEnabled``;
* amounts: ``parseTopUpAmountUsd`` (``src/lib/stripe/topup-checkout.ts``), exact micros.

Checkout pages and the delayed credit are in ``checkout.py``.
"""

from __future__ import annotations

from starlette.routing import Route

from sandbox.pymthouse.billing.invoices import (
    invoice_hosted_url,
    user_invoices,
    user_payment_methods,
)
from sandbox.pymthouse.billing.plans import (
    checkout,
    pending_change,
    plans,
    subscription_change,
    user_subscription,
)
from sandbox.pymthouse.billing.wallet import billing_state, top_up, wallet, wallet_payment_methods

routes = [
    Route("/api/v1/apps/{app}/billing/state", billing_state, methods=["GET"]),
    Route("/api/v1/apps/{app}/billing/wallet", wallet, methods=["GET", "PATCH"]),
    Route("/api/v1/apps/{app}/billing/wallet/top-up", top_up, methods=["POST"]),
    Route(
        "/api/v1/apps/{app}/billing/wallet/payment-methods",
        wallet_payment_methods,
        methods=["GET", "POST"],
    ),
    Route("/api/v1/apps/{app}/billing/checkout", checkout, methods=["POST"]),
    Route("/api/v1/apps/{app}/plans", plans, methods=["GET"]),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription",
        user_subscription,
        methods=["GET", "DELETE"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription/change",
        subscription_change,
        methods=["POST"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/subscription/pending-change",
        pending_change,
        methods=["DELETE"],
    ),
    Route("/api/v1/apps/{app}/users/{ext}/invoices", user_invoices, methods=["GET"]),
    Route(
        "/api/v1/apps/{app}/users/{ext}/invoices/{invoice}/hosted-url",
        invoice_hosted_url,
        methods=["GET"],
    ),
    Route(
        "/api/v1/apps/{app}/users/{ext}/payment-methods",
        user_payment_methods,
        methods=["GET", "POST"],
    ),
]
