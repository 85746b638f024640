"""pymthouse end-user billing: wallet, top-up, plans, subscription, invoices, cards.

The routes of pymthouse/pymthouse@5ee7cfc7 ``src/app/api/v1/apps/[id]/billing/…`` and
``…/users/[externalUserId]/…`` (docs/upstream.md §P9). Mixed into
``PymthouseClient``, so ``get_client().wallet_get(...)``.

Auth is HTTP Basic with the ``m2m_…`` client on every route: the wallet, state and
top-up routes accept nothing else (``authorizeOwnerWalletM2m``,
``src/lib/billing/owner-wallet-m2m-auth.ts``), the others also accept it
(``authorizeAppForBilling``, ``src/lib/billing/app-auth.ts``). Every auth failure is a
deliberate ``404 {"error":"Not found"}``: ``PymthouseAuthError``.

Errors, refined from the status and the body's ``code``/``error``:

* 503 → ``PymthouseBillingUnavailableError`` (no OpenMeter/Stripe: the local server);
* 409/403 Connect not ready → ``PymthouseConnectNotReadyError``;
* 409 a card is needed → ``PymthousePaymentMethodRequiredError``;
* 400 ``owner_wallet_not_app_user`` / 409 ``auto_topup_merchant_only`` →
  ``PymthouseOwnerWalletError`` (the app is ``owner_rollup``);
* 402 → ``PymthouseInsufficientFundsError``;
* 404 with a ``code`` (``no_subscription``, ``nothing_to_resume``, ``already_starter``)
  or another message → ``PymthouseNotFoundError``.

pymthouse never calls us back: after a Checkout redirect, poll ``wallet_get`` /
``billing_state_get`` (credit) or ``subscription_get`` / ``invoices_list`` (plans).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, get_args
from urllib.parse import quote

from pydantic import BaseModel

from integrations.pymthouse.billing_types import (
    AutoTopUpResult,
    BillingState,
    ChangeTiming,
    InvoiceLinks,
    InvoicePage,
    PaymentMethod,
    PaymentMethodList,
    PaymentMethodSetup,
    Plan,
    PlanCheckout,
    PlansPage,
    SubscriptionCancel,
    SubscriptionChange,
    SubscriptionResume,
    TopUpCheckout,
    UserSubscription,
    Wallet,
)
from integrations.pymthouse.config import PymthouseConfig
from integrations.pymthouse.errors import (
    PymthouseAuthError,
    PymthouseBillingConflictError,
    PymthouseBillingUnavailableError,
    PymthouseConnectNotReadyError,
    PymthouseError,
    PymthouseNotFoundError,
    PymthouseOwnerWalletError,
    PymthousePaymentMethodRequiredError,
)
from integrations.pymthouse.identifiers import validate_external_user_id
from integrations.pymthouse.money import MICROS_PER_USD, format_usd_cents
from integrations.pymthouse.transport import ClientSecretBasic, Transport, parse_model

ModelT = TypeVar("ModelT", bound=BaseModel)

#: ``parseTopUpAmountUsd`` (src/lib/stripe/topup-checkout.ts): $1.00 … $10,000.00.
TOP_UP_MIN_USD_MICROS = 1 * MICROS_PER_USD
TOP_UP_MAX_USD_MICROS = 10_000 * MICROS_PER_USD
MAX_PAGE_SIZE = 100

_OWNER_WALLET_CODES = frozenset({"owner_wallet_not_app_user", "auto_topup_merchant_only"})
_PAYMENT_METHOD_CODES = frozenset({"payment_method_required"})


def _refined_class(error: PymthouseError) -> type[PymthouseError] | None:
    """The precise billing class for a transport error, or None to keep it."""
    status, code = error.status, error.code
    text = (error.description or "").lower()
    if code in _OWNER_WALLET_CODES:
        return PymthouseOwnerWalletError
    if status == 503:
        return PymthouseBillingUnavailableError
    if status in (403, 409) and "stripe connect" in text:
        return PymthouseConnectNotReadyError
    if status == 409 and (code in _PAYMENT_METHOD_CODES or "payment method" in text):
        return PymthousePaymentMethodRequiredError
    if status == 409:
        return PymthouseBillingConflictError
    if status == 404:
        if code is None and text == "not found":
            return PymthouseAuthError  # the deliberate anti-enumeration 404
        return PymthouseNotFoundError
    return None


def _refine(error: PymthouseError) -> PymthouseError:
    refined = _refined_class(error)
    if refined is None or type(error) is refined:
        return error
    return refined(
        error.message,
        status=error.status,
        code=error.code,
        description=error.description,
        correlation_id=error.correlation_id,
        reason=error.reason,
        retry_after=error.retry_after,
        method=error.method,
        path=error.path,
    )


def _check_top_up_amount(amount_usd_micros: int) -> str:
    text = format_usd_cents(amount_usd_micros)
    if not TOP_UP_MIN_USD_MICROS <= amount_usd_micros <= TOP_UP_MAX_USD_MICROS:
        raise ValueError("amount must be between $1.00 and $10,000.00")
    return text


def _optional(body: dict[str, Any], **fields: object) -> dict[str, Any]:
    for name, value in fields.items():
        if value is not None:
            body[name] = value
    return body


class BillingMixin:
    """The billing operations of ``PymthouseClient`` (which provides these attributes)."""

    config: PymthouseConfig
    _transport: Transport
    _basic: ClientSecretBasic

    # --- plumbing -----------------------------------------------------------------------

    def _billing_path(self, suffix: str) -> str:
        return f"/api/v1/apps/{self.config.public_client_id}{suffix}"

    def _user_path(self, external_user_id: str, suffix: str) -> str:
        ext = quote(validate_external_user_id(external_user_id), safe="")
        return self._billing_path(f"/users/{ext}{suffix}")

    def _billing_call(
        self,
        model: type[ModelT],
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelT:
        try:
            _, payload = self._transport.request_json(
                method,
                self.config.base_url + path,
                auth=self._basic,
                params=params,
                json_body=json_body,
                headers=headers,
            )
        except PymthouseError as exc:
            refined = _refine(exc)
            if refined is exc:
                raise
            raise refined from exc
        return parse_model(model, payload, method=method, path=path)

    @staticmethod
    def _subject_params(external_user_id: str | None) -> dict[str, str]:
        if external_user_id is None:
            return {}
        return {"externalUserId": validate_external_user_id(external_user_id)}

    # --- wallet and state (M2M-strict) -------------------------------------------------------

    def wallet_get(self, *, external_user_id: str | None = None) -> Wallet:
        """``GET …/billing/wallet``: the payer's prepaid balance (``None`` without hosted
        billing), card, auto top-up and billing state. Merchant apps need the user."""
        return self._billing_call(
            Wallet,
            "GET",
            self._billing_path("/billing/wallet"),
            params=self._subject_params(external_user_id),
        )

    def wallet_auto_topup_set(
        self, *, external_user_id: str, enabled: bool, amount_usd_micros: int | None = None
    ) -> AutoTopUpResult:
        """``PATCH …/billing/wallet``: merchant only (``PymthouseOwnerWalletError``);
        enabling needs a saved card (``PymthousePaymentMethodRequiredError``)."""
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be a boolean")
        body: dict[str, Any] = {
            "externalUserId": validate_external_user_id(external_user_id),
            "enabled": enabled,
        }
        if amount_usd_micros is not None:
            body["amountUsd"] = _check_top_up_amount(amount_usd_micros)
        return self._billing_call(
            AutoTopUpResult, "PATCH", self._billing_path("/billing/wallet"), json_body=body
        )

    def billing_state_get(self, *, external_user_id: str | None = None) -> BillingState:
        """``GET …/billing/state``: ``can_spend``, ``status``, ``reason`` and funding."""
        return self._billing_call(
            BillingState,
            "GET",
            self._billing_path("/billing/state"),
            params=self._subject_params(external_user_id),
        )

    def top_up_create(
        self,
        *,
        amount_usd_micros: int,
        external_user_id: str | None,
        success_url: str,
        cancel_url: str,
        idempotency_key: str | None = None,
    ) -> TopUpCheckout:
        """``POST …/billing/wallet/top-up``: a Stripe Checkout for whole cents in
        $1.00–$10,000.00 (checked here first: ``ValueError``, nothing sent).

        The credit lands asynchronously (Stripe's webhook), exactly once per session;
        pymthouse forwards ``idempotency_key`` to Stripe only in owner_rollup mode. A
        POST is never retried by the transport.
        """
        body = _optional(
            {"amountUsd": _check_top_up_amount(amount_usd_micros)},
            externalUserId=(
                None if external_user_id is None else validate_external_user_id(external_user_id)
            ),
            successUrl=success_url,
            cancelUrl=cancel_url,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._billing_call(
            TopUpCheckout,
            "POST",
            self._billing_path("/billing/wallet/top-up"),
            json_body=body,
            headers=headers,
        )

    def wallet_payment_methods_list(
        self, *, external_user_id: str | None = None
    ) -> tuple[PaymentMethod, ...]:
        """``GET …/billing/wallet/payment-methods`` (does not fail open, unlike the
        ``/users/{ext}/`` twin)."""
        result = self._billing_call(
            PaymentMethodList,
            "GET",
            self._billing_path("/billing/wallet/payment-methods"),
            params=self._subject_params(external_user_id),
        )
        return result.payment_methods

    def payment_method_setup(
        self, *, external_user_id: str | None, success_url: str, cancel_url: str
    ) -> PaymentMethodSetup:
        """``POST …/billing/wallet/payment-methods``: a setup-mode Checkout that saves a
        card and charges nothing."""
        body = _optional(
            {"successUrl": success_url, "cancelUrl": cancel_url},
            externalUserId=(
                None if external_user_id is None else validate_external_user_id(external_user_id)
            ),
        )
        return self._billing_call(
            PaymentMethodSetup,
            "POST",
            self._billing_path("/billing/wallet/payment-methods"),
            json_body=body,
        )

    # --- plans and subscriptions (app client or session) ----------------------------------------

    def plans_list(self) -> tuple[Plan, ...]:
        """``GET …/plans`` (v1): the app's plans, the two defaults included."""
        return self._billing_call(PlansPage, "GET", self._billing_path("/plans")).plans

    def checkout_create(
        self,
        *,
        plan_id: str,
        external_user_id: str,
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> PlanCheckout:
        """``POST …/billing/checkout``. Without a saved card: a setup-mode URL and no
        subscription (call again after the user returns); with one: subscribed now."""
        if not plan_id:
            raise ValueError("plan_id is required")
        body = _optional(
            {"planId": plan_id, "externalUserId": validate_external_user_id(external_user_id)},
            successUrl=success_url,
            cancelUrl=cancel_url,
        )
        return self._billing_call(
            PlanCheckout, "POST", self._billing_path("/billing/checkout"), json_body=body
        )

    def subscription_get(self, *, external_user_id: str) -> UserSubscription:
        return self._billing_call(
            UserSubscription, "GET", self._user_path(external_user_id, "/subscription")
        )

    def subscription_change(
        self,
        *,
        external_user_id: str,
        plan_id: str,
        timing: ChangeTiming | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> SubscriptionChange:
        """``POST …/users/{ext}/subscription/change``; ``checkout_url`` set = save a card
        first (the plan is unchanged). 502 covers an unknown plan (pymthouse's mapping)."""
        if not plan_id:
            raise ValueError("plan_id is required")
        if timing is not None and timing not in get_args(ChangeTiming):
            raise ValueError('timing must be "immediate" or "next_billing_cycle"')
        body = _optional(
            {"planId": plan_id}, timing=timing, successUrl=success_url, cancelUrl=cancel_url
        )
        return self._billing_call(
            SubscriptionChange,
            "POST",
            self._user_path(external_user_id, "/subscription/change"),
            json_body=body,
        )

    def subscription_cancel(
        self, *, external_user_id: str, timing: ChangeTiming | None = None
    ) -> SubscriptionCancel:
        """``DELETE …/users/{ext}/subscription {confirm:true}``: at period end unless
        ``timing="immediate"`` (then onto Starter). 404 ``no_subscription`` /
        ``already_starter`` → ``PymthouseNotFoundError``."""
        if timing is not None and timing not in get_args(ChangeTiming):
            raise ValueError('timing must be "immediate" or "next_billing_cycle"')
        body = _optional({"confirm": True}, timing=timing)
        return self._billing_call(
            SubscriptionCancel,
            "DELETE",
            self._user_path(external_user_id, "/subscription"),
            json_body=body,
        )

    def subscription_resume(self, *, external_user_id: str) -> SubscriptionResume:
        """``DELETE …/subscription/pending-change {confirm:true}``: undo a scheduled
        cancel. 404 ``nothing_to_resume`` → ``PymthouseNotFoundError``."""
        return self._billing_call(
            SubscriptionResume,
            "DELETE",
            self._user_path(external_user_id, "/subscription/pending-change"),
            json_body={"confirm": True},
        )

    # --- invoices and cards -------------------------------------------------------------------

    def invoices_list(
        self, *, external_user_id: str, page: int = 1, page_size: int = 20
    ) -> InvoicePage:
        """``GET …/users/{ext}/invoices`` (fails open to an empty page upstream)."""
        if not (isinstance(page, int) and page >= 1):
            raise ValueError("page must be >= 1")
        if not (isinstance(page_size, int) and 1 <= page_size <= MAX_PAGE_SIZE):
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        return self._billing_call(
            InvoicePage,
            "GET",
            self._user_path(external_user_id, "/invoices"),
            params={"page": str(page), "pageSize": str(page_size)},
        )

    def invoice_hosted_url(self, *, external_user_id: str, invoice_id: str) -> InvoiceLinks:
        """``GET …/invoices/{id}/hosted-url``. An unknown invoice is the same bare
        ``404 Not found`` as bad credentials (``PymthouseAuthError``) upstream."""
        if not invoice_id:
            raise ValueError("invoice_id is required")
        suffix = f"/invoices/{quote(invoice_id, safe='')}/hosted-url"
        return self._billing_call(InvoiceLinks, "GET", self._user_path(external_user_id, suffix))

    def payment_methods_list(self, *, external_user_id: str) -> tuple[PaymentMethod, ...]:
        """``GET …/users/{ext}/payment-methods`` (``[]`` until Connect is ready)."""
        result = self._billing_call(
            PaymentMethodList, "GET", self._user_path(external_user_id, "/payment-methods")
        )
        return result.payment_methods
