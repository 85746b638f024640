"""Writes of the billing app. Every balance change goes through ``ledger``.

The three generation hooks (``generation_admit``, ``generation_charge_settle``,
``generation_hold_release``) are called by ``inference.services``; the usage mirror
calls ``generation_usage_settle`` when a manifest row shows the fee of a generation
whose outcome was unknown.
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
from billing.services.admission import (
    generation_admit,
    generation_charge_settle,
    generation_hold_release,
    generation_usage_settle,
    holds_resolve_stale,
    max_fee_estimate,
    price_observe,
)
from billing.services.ledger import credit_deduct, credit_grant, ledger_correct, ledger_entry_append

__all__ = [
    "account_change_plan",
    "account_open",
    "account_set_suspended",
    "credit_deduct",
    "credit_grant",
    "demo_billing_seed",
    "generation_admit",
    "generation_charge_settle",
    "generation_hold_release",
    "generation_usage_settle",
    "holds_resolve_stale",
    "ledger_correct",
    "ledger_entry_append",
    "max_fee_estimate",
    "plans_seed",
    "price_observe",
    "subscription_renew",
]
