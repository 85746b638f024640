"""Writes of the billing app. Every balance change goes through ``ledger``.

The generation hooks (``generation_admit``, ``generation_charge_settle``,
``generation_hold_release``, ``generation_charge_refund``, and the stale-hold sweep's
``hold_settle`` / ``hold_release``) are called by ``inference.services`` with the values they need;
billing reads no generation row. The usage mirror calls ``generation_usage_settle``
when a manifest row shows the fee of a generation whose outcome was unknown.
"""

from __future__ import annotations

from billing.services.accounts import (
    account_change_plan,
    account_open,
    account_set_suspended,
    demo_billing_seed,
    plans_seed,
    subscription_renew,
)
from billing.services.holds import (
    generation_admit,
    generation_charge_refund,
    generation_charge_settle,
    generation_hold_release,
    generation_usage_settle,
    hold_release,
    hold_settle,
    holds_mark_swept,
)
from billing.services.ledger import credit_deduct, credit_grant, ledger_correct, ledger_entry_append
from billing.services.low_balance import low_balance_mail_send
from billing.services.payments import (
    PaymentError,
    PaymentsUnavailableError,
    auto_topup_configure,
    auto_topup_run,
    card_setup_finish,
    card_setup_start,
    credit_purchase,
    payment_refresh,
    renewal_failure,
    renewals_due,
    stripe_event_process,
    subscription_purchase,
    subscription_renewal_run,
)
from billing.services.pricing import estimated_fee_wei, max_fee_estimate, price_observe
from billing.services.promotions import (
    promotion_grant,
    promotions_expire_due,
    promotions_expire_for_account,
)
from billing.services.subscriptions import pending_change_apply, pending_changes_due
from billing.services.wallet import (
    merchant_wallets_refresh,
    wallet_refresh,
    wallet_refresh_if_stale,
)

__all__ = [
    "PaymentError",
    "PaymentsUnavailableError",
    "auto_topup_configure",
    "auto_topup_run",
    "card_setup_finish",
    "card_setup_start",
    "credit_purchase",
    "renewal_failure",
    "renewals_due",
    "subscription_purchase",
    "subscription_renewal_run",
    "payment_refresh",
    "stripe_event_process",
    "account_change_plan",
    "account_open",
    "account_set_suspended",
    "credit_deduct",
    "credit_grant",
    "demo_billing_seed",
    "estimated_fee_wei",
    "generation_admit",
    "generation_charge_refund",
    "generation_charge_settle",
    "generation_hold_release",
    "generation_usage_settle",
    "hold_release",
    "hold_settle",
    "holds_mark_swept",
    "ledger_correct",
    "ledger_entry_append",
    "low_balance_mail_send",
    "max_fee_estimate",
    "pending_change_apply",
    "pending_changes_due",
    "plans_seed",
    "price_observe",
    "promotion_grant",
    "promotions_expire_due",
    "promotions_expire_for_account",
    "subscription_renew",
    "merchant_wallets_refresh",
    "wallet_refresh",
    "wallet_refresh_if_stale",
]
