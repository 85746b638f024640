"""Plans and accounts: plan changes, suspension and subscription renewals (seeding the
standard plans and opening accounts live with the account lock, ``billing.lock_objects``,
and are re-exported here)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing.lock_objects import (
    STANDARD_PLANS,
    PlanSeed,
    account_lock,
    account_open,
    plans_seed,
)
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    LedgerEntry,
    Plan,
    PlanAssignment,
)
from billing.plan_policy import plan_policy
from billing.services.ledger import ledger_entry_append
from billing.services.promotions import promotion_grant

logger = logging.getLogger(__name__)

__all__ = ["STANDARD_PLANS", "PlanSeed", "account_open", "plans_seed"]


@transaction.atomic
def account_change_plan(
    *,
    user: User,
    plan: Plan,
    acting_user: User | None,
    reason: str,
    subscription_starts_at: datetime | None = None,
    subscription_ends_at: datetime | None = None,
) -> Account:
    """Move the user to ``plan``; the old assignment is closed, history kept.

    Open holds stay until their generations settle or release them.
    """
    if not reason.strip():
        raise ValueError("a plan change needs a reason")
    account = account_lock(user_id=user.pk)
    now = timezone.now()
    if account.plan_id != plan.pk:
        PlanAssignment.objects.filter(account=account, ended_at__isnull=True).update(ended_at=now)
        PlanAssignment.objects.create(
            account=account, plan=plan, started_at=now, actor=acting_user, reason=reason.strip()
        )
        account.plan = plan
    fields = ["plan", "updated_at"]
    if plan_policy(plan).has_subscription and subscription_ends_at is not None:
        account.subscription_starts_at = subscription_starts_at or now
        account.subscription_ends_at = subscription_ends_at
        fields += ["subscription_starts_at", "subscription_ends_at"]
    account.full_clean()
    account.save(update_fields=fields)
    logger.info(
        "billing: user %s moved to plan %s by %s",
        user.pk,
        plan.slug,
        acting_user.pk if acting_user else "system",
    )
    return account


@transaction.atomic
def account_set_suspended(
    *, user: User, suspended: bool, reason: str, acting_user: User | None
) -> Account:
    """Suspend (no new generations admitted) or reinstate a billing account."""
    if suspended and not reason.strip():
        raise ValueError("a suspension needs a reason")
    account = account_lock(user_id=user.pk)
    account.suspended = suspended
    account.suspended_reason = reason.strip()[:500] if suspended else ""
    account.save(update_fields=["suspended", "suspended_reason", "updated_at"])
    logger.info(
        "billing: user %s suspended=%s by %s",
        user.pk,
        suspended,
        acting_user.pk if acting_user else "system",
    )
    return account


@transaction.atomic
def subscription_renew(
    *, user: User, starts_at: datetime, ends_at: datetime, acting_user: User | None
) -> LedgerEntry:
    """Set the active period of a subscription and record its flat fee once per period.

    The fee entry is a record (``effect=record``): collecting it is outside the product.
    Renewing the same period twice records one fee (the key is the period start).
    """
    if ends_at <= starts_at:
        raise ValueError("a subscription period must end after it starts")
    account = account_lock(user_id=user.pk)
    plan = account.plan
    if not plan_policy(plan).has_subscription:
        raise ValueError("the account is not on a subscription plan")
    account.subscription_starts_at = starts_at
    account.subscription_ends_at = ends_at
    account.save(update_fields=["subscription_starts_at", "subscription_ends_at", "updated_at"])
    return ledger_entry_append(
        account=account,
        kind=EntryKind.SUBSCRIPTION_FEE,
        effect=EntryEffect.RECORD,
        amount_micros=plan.subscription_fee_micros,
        reason=f"{plan.name}: {starts_at:%Y-%m-%d} to {ends_at:%Y-%m-%d}",
        idempotency_key=f"subscription_fee:{user.pk}:{plan.pk}:{starts_at.isoformat()}",
        acting_user=acting_user,
    )


#: Demo credit for the usage-based demo user: $5.00, about 290 images at the sandbox
#: runners' fixed price (4,768,371,000,000 wei per call, $0.0143 at $3,000/ETH) with the
#: pay-as-you-go multiplier of 6/5.
DEMO_CREDIT_MICROS = 5_000_000


def demo_billing_seed(*, usage_user: User, free_user: User, subscription_user: User) -> None:
    """One demo user per plan type: idempotent (plan changes are no-ops when already
    set; the credit grant and the subscription fee have fixed keys)."""
    plans = {plan.slug: plan for plan in plans_seed()}

    account_change_plan(
        user=usage_user, plan=plans["pay-as-you-go"], acting_user=None, reason="demo seed"
    )
    # Demo credit is promotional (no expiry). A database seeded before promotional
    # credit has it as a plain grant, which migration 0015 turned into a lot: not twice.
    legacy_key = f"grant:demo-credit:{usage_user.pk}"
    if not LedgerEntry.objects.filter(idempotency_key=legacy_key).exists():
        promotion_grant(
            user=usage_user,
            amount_micros=DEMO_CREDIT_MICROS,
            reason="demo credit",
            acting_user=None,
            idempotency_key=f"demo-credit:{usage_user.pk}",
        )
    account_change_plan(user=free_user, plan=plans["free"], acting_user=None, reason="demo seed")
    account = account_change_plan(
        user=subscription_user, plan=plans["studio"], acting_user=None, reason="demo seed"
    )
    now = timezone.now()
    if account.subscription_ends_at is None or account.subscription_ends_at <= now:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        subscription_renew(
            user=subscription_user,
            starts_at=start,
            ends_at=start + timedelta(days=30),
            acting_user=None,
        )
