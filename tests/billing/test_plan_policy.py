"""One home per plan type: every ``PlanType`` has a policy, and the policies answer as
the plan descriptions say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from billing.models import Account, Plan, PlanType
from billing.plan_policy import POLICIES, plan_policy
from billing.selectors import plan_display

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_every_plan_type_has_exactly_one_policy() -> None:
    assert set(POLICIES) == set(PlanType.values)


def test_free_counts_against_its_allowance() -> None:
    plan = Plan(plan_type=PlanType.FREE, monthly_generation_allowance=2)
    policy = plan_policy(plan)
    account = Account(plan=plan)
    assert (policy.charges, policy.counts_images, policy.monthly_limit(plan)) == (False, True, 2)
    assert policy.refusal(account=account, plan=plan, images_this_month=2, now=NOW) is None
    refused = policy.refusal(account=account, plan=plan, images_this_month=3, now=NOW)
    assert refused is not None
    assert refused.code == "allowance_used"
    assert policy.charge(plan, fee_wei=10**18, usd_per_eth=Fraction(3000)) == 0


def test_subscription_needs_an_active_period_and_respects_its_cap() -> None:
    plan = Plan(plan_type=PlanType.SUBSCRIPTION, monthly_generation_cap=5)
    policy = plan_policy(plan)
    lapsed = Account(plan=plan, subscription_starts_at=NOW - timedelta(days=40),
                     subscription_ends_at=NOW - timedelta(days=10))  # fmt: skip
    active = Account(plan=plan, subscription_starts_at=NOW - timedelta(days=1),
                     subscription_ends_at=NOW + timedelta(days=29))  # fmt: skip
    inactive = policy.refusal(account=lapsed, plan=plan, images_this_month=1, now=NOW)
    assert inactive is not None
    assert inactive.code == "subscription_inactive"
    assert policy.refusal(account=active, plan=plan, images_this_month=5, now=NOW) is None
    capped = policy.refusal(account=active, plan=plan, images_this_month=6, now=NOW)
    assert capped is not None
    assert capped.code == "monthly_cap_reached"


def test_usage_charges_the_fee_in_usd_times_its_multiplier_rounded_up_or_a_flat_price() -> None:
    multiplied = Plan(plan_type=PlanType.USAGE, multiplier_numerator=6, multiplier_denominator=5)
    flat = Plan(plan_type=PlanType.USAGE, flat_price_micros=20_000)
    rate = Fraction(3000)
    # 4,768,371,000,000 wei × $3,000/ETH = 14,305.113 µ$; × 6/5 = 17,166.1356 → 17,167
    assert (
        plan_policy(multiplied).charge(multiplied, fee_wei=4_768_371_000_000, usd_per_eth=rate)
        == 17_167
    )
    # exactly 1 ETH at $3,000 × 6/5 = $3,600: no rounding
    assert (
        plan_policy(multiplied).charge(multiplied, fee_wei=10**18, usd_per_eth=rate)
        == 3_600_000_000
    )
    # one wei is still charged a whole micro (rounded up, never down)
    assert plan_policy(multiplied).charge(multiplied, fee_wei=1, usd_per_eth=rate) == 1
    assert plan_policy(flat).charge(flat, fee_wei=10**20, usd_per_eth=rate) == 20_000
    assert plan_policy(multiplied).monthly_limit(multiplied) is None


@pytest.mark.parametrize(
    ("plan_type", "shown"),
    [
        (PlanType.FREE, (False, True, False)),
        (PlanType.SUBSCRIPTION, (False, True, True)),
        (PlanType.USAGE, (True, False, False)),
    ],
)
def test_pages_are_told_what_to_show(plan_type: str, shown: tuple[bool, bool, bool]) -> None:
    display = plan_display(account=Account(plan=Plan(name="P", plan_type=plan_type)))
    assert (display.shows_credit, display.shows_allowance, display.shows_subscription) == shown
