"""Users change their own plan: quotes in dollars, proration, scheduled changes, and the
fulfilment of a paid change exactly once (billing/services/subscriptions.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from billing.models import Account, EntryKind, LedgerEntry, Plan, PlanAssignment, PlanType
from billing.services import account_change_plan, account_open
from billing.services.subscriptions import (
    PlanChangeError,
    pending_change_apply,
    pending_changes_due,
    plan_change_free,
    plan_change_quote,
    plan_change_undo,
    subscription_fulfil,
)
from billing.tasks import plan_changes_apply_due_task

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def account_of(user: User) -> Account:
    account_open(user_id=user.pk)
    return Account.objects.select_related("plan", "pending_plan").get(pk=user.pk)


@pytest.fixture
def studio_user(make_user: Callable[..., User], plans: dict[str, Plan]) -> User:
    """On Studio ($29.00) for the period NOW − 10 days … NOW + 20 days (a third left)."""
    user = make_user()
    account_change_plan(
        user=user,
        plan=plans["studio"],
        acting_user=None,
        reason="test setup",
        subscription_starts_at=NOW - timedelta(days=10),
        subscription_ends_at=NOW + timedelta(days=20),
    )
    return user


@pytest.fixture
def pro_plan(plans: dict[str, Plan]) -> Plan:
    return Plan.objects.create(
        slug="pro",
        name="Pro subscription",
        plan_type=PlanType.SUBSCRIPTION,
        monthly_generation_cap=2000,
        subscription_fee_micros=99_000_000,
    )


def test_subscribing_from_free_costs_the_whole_fee_for_a_new_period(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    quote = plan_change_quote(account=account_of(user), plan=plans["studio"], now=NOW)
    assert (quote.timing, quote.charge_now_micros) == ("now", 29_000_000)
    assert (quote.period_starts_at, quote.period_ends_at) == (NOW, NOW + timedelta(days=30))
    assert quote.summary == (
        "You pay $29.00 now for Studio subscription from Dec 3, 2026 to Jan 2, 2027; "
        "it renews at that price unless you cancel."
    )


def test_upgrading_pays_the_difference_for_the_rest_of_the_period_rounded_up(
    studio_user: User, pro_plan: Plan
) -> None:
    quote = plan_change_quote(account=account_of(studio_user), plan=pro_plan, now=NOW)
    # (99 − 29) × 20/30 = 46.666666… → 46,666,667 µ$ (up, once), charged as whole cents.
    assert (quote.timing, quote.charge_now_micros) == ("now", 46_670_000)
    assert quote.period_ends_at == NOW + timedelta(days=20)
    assert quote.summary.startswith(
        "You pay $46.67 now ($46.666667 rounded up to the cent): the difference between "
        "$99.00 and $29.00"
    )


def test_a_change_that_costs_money_is_not_made_without_a_payment(
    studio_user: User, pro_plan: Plan
) -> None:
    with pytest.raises(PlanChangeError) as refused:
        plan_change_free(user=studio_user, plan=pro_plan, now=NOW)
    assert refused.value.code == "payment_required"
    account = account_of(studio_user)
    assert (account.plan.slug, account.pending_plan_id) == ("studio", None)
    assert not LedgerEntry.objects.filter(account=account).exists()


def test_downgrading_waits_for_the_period_end_and_then_applies_once(
    studio_user: User, plans: dict[str, Plan]
) -> None:
    quote = plan_change_free(user=studio_user, plan=plans["pay-as-you-go"], now=NOW)
    assert (quote.timing, quote.charge_now_micros) == ("period_end", 0)
    assert quote.summary == (
        "You keep Studio subscription until Dec 23, 2026 and move to Pay as you go then; "
        "you won't be charged again. Nothing is refunded for the rest of this period."
    )
    account = account_of(studio_user)
    assert (account.plan.slug, account.pending_plan.slug) == ("studio", "pay-as-you-go")

    assert pending_changes_due(now=NOW) == []
    assert pending_change_apply(user_id=studio_user.pk, now=NOW) is None
    assert account_of(studio_user).plan.slug == "studio"

    end = NOW + timedelta(days=20)
    assert pending_changes_due(now=end) == [studio_user.pk]
    assert pending_change_apply(user_id=studio_user.pk, now=end) is not None
    assert pending_change_apply(user_id=studio_user.pk, now=end) is None
    account = account_of(studio_user)
    assert (account.plan.slug, account.pending_plan_id) == ("pay-as-you-go", None)
    assert PlanAssignment.objects.filter(account=account, ended_at__isnull=True).count() == 1


def test_cancel_then_resume_keeps_the_subscription(
    studio_user: User, plans: dict[str, Plan]
) -> None:
    plan_change_free(user=studio_user, plan=plans["free"], now=NOW)
    assert account_of(studio_user).pending_plan.slug == "free"
    plan_change_undo(user=studio_user)
    assert account_of(studio_user).pending_plan_id is None
    with pytest.raises(PlanChangeError) as nothing:
        plan_change_undo(user=studio_user)
    assert nothing.value.code == "nothing_to_resume"
    assert pending_changes_due(now=NOW + timedelta(days=40)) == []


def test_switching_between_plans_without_a_fee_is_immediate_and_free(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    quote = plan_change_free(user=user, plan=plans["pay-per-image"], now=NOW)
    assert (quote.timing, quote.charge_now_micros) == ("now", 0)
    account = account_of(user)
    assert account.plan.slug == "pay-per-image"
    assert not LedgerEntry.objects.filter(account=account).exists()
    with pytest.raises(PlanChangeError) as same:
        plan_change_quote(account=account, plan=plans["pay-per-image"], now=NOW)
    assert same.value.code == "same_plan"


def test_an_ended_subscription_can_be_renewed_on_the_same_plan(
    studio_user: User, plans: dict[str, Plan]
) -> None:
    later = NOW + timedelta(days=25)
    quote = plan_change_quote(account=account_of(studio_user), plan=plans["studio"], now=later)
    assert (quote.charge_now_micros, quote.period_starts_at) == (29_000_000, later)


def test_a_paid_subscription_is_fulfilled_once_per_payment(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    for _ in range(3):  # the page's answer, the webhook, a replay
        entry = subscription_fulfil(
            user=user,
            plan=plans["studio"],
            amount_micros=29_000_000,
            payment_ref="pi_123",
            paid_at=NOW,
        )
    entries = LedgerEntry.objects.filter(account_id=user.pk, kind=EntryKind.SUBSCRIPTION_FEE)
    assert [(e.pk, e.amount_micros, e.effect) for e in entries] == [
        (entry.pk, 29_000_000, "record")
    ]
    assert entry.reason == "Studio subscription: Dec 3, 2026 to Jan 2, 2027, paid by card"
    account = account_of(user)
    assert (account.plan.slug, account.subscription_starts_at, account.subscription_ends_at) == (
        "studio",
        NOW,
        NOW + timedelta(days=30),
    )
    assert account.balance_micros == 0  # paid by card, not from credit


def test_a_paid_upgrade_keeps_the_period_end(studio_user: User, pro_plan: Plan) -> None:
    subscription_fulfil(
        user=studio_user, plan=pro_plan, amount_micros=46_666_667, payment_ref="pi_up", paid_at=NOW
    )
    account = account_of(studio_user)
    assert (account.plan.slug, account.subscription_ends_at) == ("pro", NOW + timedelta(days=20))


def test_plans_page_states_every_plan_in_dollars_and_switches(
    client: Client, make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    client.force_login(user)
    page = client.get(reverse("billing:plans")).content.decode()
    assert "20 free images a month" in page
    assert "$29.00 per 30 days, up to 500 images a month" in page
    assert "$0.02 per image, from your credit" in page
    assert "Each image&#x27;s network cost × 6/5, from your credit" in page

    paid = client.post(reverse("billing:plan_choose", args=["studio"]))
    assert paid["Location"] == reverse("billing:plan_pay", args=["studio"])
    assert account_of(user).plan.slug == "free"  # nothing changes before the payment
    pay_page = client.get(paid["Location"]).content.decode()
    assert 'data-charge-micros="29000000"' in pay_page

    switched = client.post(reverse("billing:plan_choose", args=["pay-as-you-go"]))
    assert switched["Location"] == reverse("billing:plans")
    assert account_of(user).plan.slug == "pay-as-you-go"


def test_the_beat_task_applies_due_changes_once(studio_user: User, plans: dict[str, Plan]) -> None:
    Account.objects.filter(pk=studio_user.pk).update(
        pending_plan=plans["free"], subscription_ends_at=NOW - timedelta(minutes=1)
    )
    assert plan_changes_apply_due_task.apply().get() == 1
    assert plan_changes_apply_due_task.apply().get() == 0
    assert account_of(studio_user).plan.slug == "free"


def test_a_used_up_allowance_leads_to_the_plans_page(
    client: Client, make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    Plan.objects.filter(slug="free").update(monthly_generation_allowance=0)
    user = make_user()
    client.force_login(user)
    page = client.get(reverse("inference:generate")).content.decode()
    assert "used all 0 free images" in page
    assert (
        f'<a class="button small" href="{reverse("billing:plans")}" data-quote-action>See plans</a>'
        in page
    )
    dashboard = client.get(reverse("billing:dashboard")).content.decode()
    assert f'href="{reverse("billing:plans")}" data-change-plan' in dashboard
