"""Issue 13 items 1 and 4 at billing's hooks: a refund credits back exactly what was
debited, once; an image admitted on a plan that does not charge is never charged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accounts.models import User
from billing.models import EntryKind, Hold, HoldStatus, LedgerEntry, Plan
from billing.services import account_change_plan
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    grant,
    new_generation,
    usage_settle,
)

pytestmark = pytest.mark.django_db

FEE = 4_000_000_000_003
# 4,000,000,000,003 wei at $3,000/ETH = 12,000.000000009 µ$; × 6/5 → 14,401 µ$ (rounded up)
CHARGE = 14_401


def test_an_image_admitted_on_the_free_plan_is_not_charged_after_a_plan_change(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    account_change_plan(user=user, plan=plans["free"], acting_user=None, reason="test")
    generation = new_generation(user)
    admit_generation(generation)
    assert not Hold.objects.filter(generation_id=generation.pk).exists()
    # Staff move the user to pay-as-you-go and give credit before the payment settles.
    account_change_plan(user=user, plan=plans["pay-as-you-go"], acting_user=None, reason="up")
    grant(user, 10**18)

    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)
    assert usage_settle(generation_id=generation.pk, fee_wei=FEE, usage_ref="manifest:m") is False

    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).exists()
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (10**18, 0)
    assert list(LedgerEntry.objects.values_list("kind", flat=True)) == ["grant"]
    assert_ledger_matches(user)


def test_a_refund_credits_back_the_usage_debit_once(usage_user: User) -> None:
    from billing.services import generation_charge_refund

    grant(usage_user, 10**18)
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)
    assert account_of(usage_user).balance_micros == 10**18 - CHARGE

    for _ in range(2):
        generation_charge_refund(
            owner_id=usage_user.pk, generation_id=generation.pk, reason="wrong-size image"
        )

    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    refund = LedgerEntry.objects.get(kind="refund")
    assert debit.amount_micros == refund.amount_micros == CHARGE
    assert (refund.effect, refund.idempotency_key) == ("credit", f"refund:{generation.pk}")
    assert refund.get_kind_display() == "Refund"
    assert "wrong-size image" in refund.reason
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.status, hold.charged_micros) == (HoldStatus.SETTLED, CHARGE)  # as paid
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (10**18, 0)
    # A late metered row does not charge it again.
    assert usage_settle(generation_id=generation.pk, fee_wei=FEE, usage_ref="manifest:m") is False
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).count() == 1
    assert_ledger_matches(usage_user)


def test_a_refund_of_an_unconfirmed_payment_releases_the_hold_and_blocks_a_later_charge(
    usage_user: User,
) -> None:
    from billing.services import generation_charge_refund

    grant(usage_user, 10**18)
    generation = new_generation(usage_user)
    admit_generation(generation)
    held = account_of(usage_user).held_micros
    assert held > 0

    generation_charge_refund(owner_id=usage_user.pk, generation_id=generation.pk, reason="x")

    hold = Hold.objects.get(generation_id=generation.pk)
    assert hold.status == HoldStatus.RELEASED
    assert usage_settle(generation_id=generation.pk, fee_wei=FEE, usage_ref="manifest:m") is False
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).exists()
    refund = LedgerEntry.objects.get(kind="refund")
    assert refund.amount_micros == 0  # nothing was charged: the record that it never will be
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (10**18, 0)
    assert_ledger_matches(usage_user)


def test_a_refund_for_an_image_that_was_never_charged_or_held_writes_nothing(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    from billing.services import generation_charge_refund

    user = make_user()
    account_change_plan(user=user, plan=plans["free"], acting_user=None, reason="test")
    generation = new_generation(user)
    admit_generation(generation)

    generation_charge_refund(owner_id=user.pk, generation_id=generation.pk, reason="x")

    assert not LedgerEntry.objects.exists()
