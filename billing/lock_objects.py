"""Billing accounts: the standard plans, opening an account on first need, and the row
lock for read-modify-write (house style R5)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Account, Plan, PlanAssignment, PlanType


@dataclass(frozen=True)
class PlanSeed:
    slug: str
    name: str
    plan_type: str
    monthly_generation_allowance: int | None = None
    monthly_generation_cap: int | None = None
    subscription_fee_micros: int = 0
    multiplier_numerator: int = 1
    multiplier_denominator: int = 1
    flat_price_micros: int | None = None


#: The standard plans. Existing rows are never changed by seeding (staff may edit them).
STANDARD_PLANS: tuple[PlanSeed, ...] = (
    PlanSeed("free", "Free", PlanType.FREE, monthly_generation_allowance=20),
    PlanSeed(
        "studio",
        "Studio subscription",
        PlanType.SUBSCRIPTION,
        monthly_generation_cap=500,
        subscription_fee_micros=29_000_000,  # $29.00
    ),
    PlanSeed(
        "pay-as-you-go",
        "Pay as you go",
        PlanType.USAGE,
        multiplier_numerator=6,
        multiplier_denominator=5,
    ),
    PlanSeed(
        "pay-per-image",
        "Pay per image",
        PlanType.USAGE,
        flat_price_micros=20_000,  # $0.02
    ),
)


def plans_seed() -> list[Plan]:
    """Create the standard plans that do not exist yet (by slug); idempotent."""
    plans = []
    for seed in STANDARD_PLANS:
        plan, _ = Plan.objects.get_or_create(
            slug=seed.slug,
            defaults={
                "name": seed.name,
                "plan_type": seed.plan_type,
                "monthly_generation_allowance": seed.monthly_generation_allowance,
                "monthly_generation_cap": seed.monthly_generation_cap,
                "subscription_fee_micros": seed.subscription_fee_micros,
                "multiplier_numerator": seed.multiplier_numerator,
                "multiplier_denominator": seed.multiplier_denominator,
                "flat_price_micros": seed.flat_price_micros,
            },
        )
        plans.append(plan)
    return plans


def _default_plan() -> Plan:
    plan = Plan.objects.filter(slug=settings.BILLING_DEFAULT_PLAN).first()
    if plan is None:
        plans_seed()
        plan = Plan.objects.get(slug=settings.BILLING_DEFAULT_PLAN)
    return plan


@transaction.atomic
def account_open(*, user_id: int) -> Account:
    """The user's account, created on the default plan (``BILLING_DEFAULT_PLAN``) if new."""
    account = Account.objects.filter(pk=user_id).first()
    if account is not None:
        return account
    plan = _default_plan()
    try:
        with transaction.atomic():
            account = Account.objects.create(user_id=user_id, plan=plan)
            PlanAssignment.objects.create(
                account=account, plan=plan, started_at=timezone.now(), reason="default plan"
            )
    except IntegrityError:  # opened concurrently
        return Account.objects.get(pk=user_id)
    return account


def _locking() -> QuerySet[Account]:
    # Only the account row (``of=("self",)``): locking the joined plan row too would
    # serialise every user on that plan. NO KEY UPDATE leaves foreign-key checks of
    # rows that reference the account (ledger entries, holds) unblocked.
    return Account.objects.select_for_update(of=("self",), no_key=True).select_related("plan")


def account_lock(*, user_id: int) -> Account:
    """The user's account, locked for this transaction; opened on the default plan if new.

    Must run inside ``transaction.atomic``. On PostgreSQL this is ``SELECT … FOR
    UPDATE``; on SQLite every write transaction already holds the database's write
    lock (``transaction_mode=IMMEDIATE``), which serialises the same sections.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("account_lock must be called inside transaction.atomic")
    account = _locking().filter(pk=user_id).first()
    if account is None:
        account_open(user_id=user_id)
        account = _locking().get(pk=user_id)
    return account
