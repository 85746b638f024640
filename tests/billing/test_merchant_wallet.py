"""Merchant mode: the wallet mirror's rule and admission against it (docs/billing.md
"Merchant mode"). The mirror is handed readings as pymthouse's wallet route answers
them; the HTTP path is in tests/billing/test_merchant_pages.py against the sandbox."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from billing.errors import CreditRefusedError
from billing.models import EntryKind, Hold, LedgerEntry, MerchantWallet
from billing.services.wallet import INCLUDED_USAGE_REF, WalletReading, wallet_mirror_apply
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    new_generation,
)

pytestmark = pytest.mark.django_db

FEE_WEI = 4_768_371_000_000  # the sandbox runner's price: $0.014305113 at $3,000/ETH
FEE_MICROS = 14_306  # ⌈14,305.113⌉: merchant mode charges the fee itself, no multiplier
ESTIMATE_HOLD_MICROS = 15_000  # BILLING_ESTIMATED_FEE_WEI 5,000,000,000,000 at $3,000/ETH


@pytest.fixture(autouse=True)
def merchant(settings: Any) -> None:
    settings.BILLING_MODE = "merchant"
    settings.BILLING_ETH_USD_RATE = "3000"


def reading(**changes: Any) -> WalletReading:
    base = WalletReading(
        granted_micros=0,
        consumed_micros=0,
        balance_micros=0,
        can_spend=True,
        status="active",
        reason="",
        has_payment_method=False,
        included_consumed_micros=0,
        included_period="2026-12-31",
    )
    return replace(base, **changes)


def kinds(user: Any) -> list[tuple[str, int]]:
    return [
        (entry.kind, entry.amount_micros)
        for entry in LedgerEntry.objects.filter(account_id=user.pk).order_by("pk")
    ]


def test_granted_growth_is_credited_once_per_counter_value(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=25_000_000))
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=25_000_000))
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=35_000_000))

    entries = LedgerEntry.objects.filter(account_id=usage_user.pk).order_by("pk")
    assert [(e.kind, e.amount_micros, e.idempotency_key) for e in entries] == [
        (EntryKind.WALLET_CREDIT, 25_000_000, f"wallet-granted:{usage_user.pk}:25000000"),
        (EntryKind.WALLET_CREDIT, 10_000_000, f"wallet-granted:{usage_user.pk}:35000000"),
    ]
    assert account_of(usage_user).balance_micros == 35_000_000
    assert_ledger_matches(usage_user)


def test_a_counter_going_back_debits_nothing(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=5_000_000))
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=1_000_000))

    assert kinds(usage_user) == [(EntryKind.WALLET_CREDIT, 5_000_000)]
    assert MerchantWallet.objects.get(account_id=usage_user.pk).granted_micros == 5_000_000


def test_no_balance_billing_off_mirrors_nothing_but_the_state(usage_user: Any) -> None:
    wallet = wallet_mirror_apply(
        user_id=usage_user.pk,
        reading=reading(
            granted_micros=None,
            consumed_micros=None,
            balance_micros=None,
            can_spend=False,
            status="blocked",
            reason="billing_unavailable",
            included_period="",
        ),
    )
    assert kinds(usage_user) == []
    assert (wallet.can_spend, wallet.status, wallet.reason) == (
        False,
        "blocked",
        "billing_unavailable",
    )


def test_consumption_explained_by_local_usage_is_not_debited_again(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=1_000_000))
    generation = new_generation(usage_user)
    admit_generation(generation)
    hold = Hold.objects.get(generation_id=generation.pk)
    assert hold.amount_micros == ESTIMATE_HOLD_MICROS  # no × 6/5 of pay-as-you-go

    # pymthouse meters the ticket before our payment confirm: the open hold explains it.
    wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=1_000_000, consumed_micros=FEE_MICROS)
    )
    assert EntryKind.WALLET_DEBIT not in [kind for kind, _ in kinds(usage_user)]

    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)
    wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=1_000_000, consumed_micros=FEE_MICROS)
    )
    assert kinds(usage_user) == [
        (EntryKind.WALLET_CREDIT, 1_000_000),
        (EntryKind.HOLD, ESTIMATE_HOLD_MICROS),
        (EntryKind.HOLD_RELEASE, ESTIMATE_HOLD_MICROS),
        (EntryKind.USAGE_DEBIT, FEE_MICROS),
    ]
    assert account_of(usage_user).balance_micros == 1_000_000 - FEE_MICROS
    assert_ledger_matches(usage_user)


def test_consumption_beyond_local_usage_is_debited_once(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=2_000_000))
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)

    more = reading(granted_micros=2_000_000, consumed_micros=FEE_MICROS + 500_000)
    wallet_mirror_apply(user_id=usage_user.pk, reading=more)
    wallet_mirror_apply(user_id=usage_user.pk, reading=more)

    debits = LedgerEntry.objects.filter(account_id=usage_user.pk, kind=EntryKind.WALLET_DEBIT)
    assert [e.amount_micros for e in debits] == [500_000]
    assert account_of(usage_user).balance_micros == 2_000_000 - FEE_MICROS - 500_000
    assert_ledger_matches(usage_user)


def test_pymthouse_lagging_behind_local_debits_is_never_credited_back(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=1_000_000))
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)

    # Metered a little less than we debited (rounding), or not at all yet.
    for consumed in (0, FEE_MICROS - 1):
        wallet_mirror_apply(
            user_id=usage_user.pk,
            reading=reading(granted_micros=1_000_000, consumed_micros=consumed),
        )
    assert [kind for kind, _ in kinds(usage_user)] == [
        EntryKind.WALLET_CREDIT,
        EntryKind.HOLD,
        EntryKind.HOLD_RELEASE,
        EntryKind.USAGE_DEBIT,
    ]
    assert account_of(usage_user).balance_micros == 1_000_000 - FEE_MICROS


def test_debit_beyond_the_available_credit_takes_what_is_there(usage_user: Any) -> None:
    wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=100, consumed_micros=300)
    )
    assert kinds(usage_user) == [(EntryKind.WALLET_CREDIT, 100), (EntryKind.WALLET_DEBIT, 100)]
    # The rest is taken once credit arrives.
    wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=1_100, consumed_micros=300)
    )
    assert kinds(usage_user)[2:] == [
        (EntryKind.WALLET_CREDIT, 1_000),
        (EntryKind.WALLET_DEBIT, 200),
    ]
    assert account_of(usage_user).balance_micros == 800
    assert_ledger_matches(usage_user)


def test_usage_paid_by_the_plans_included_usage_is_given_back(usage_user: Any) -> None:
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=1_000_000))
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)
    # pymthouse took the fee from the Starter plan's included $5, not from the wallet.
    paid = reading(granted_micros=1_000_000, consumed_micros=0, included_consumed_micros=14_305)
    wallet_mirror_apply(user_id=usage_user.pk, reading=paid)
    wallet_mirror_apply(user_id=usage_user.pk, reading=paid)

    credit = LedgerEntry.objects.get(account_id=usage_user.pk, usage_ref=INCLUDED_USAGE_REF)
    assert (credit.kind, credit.amount_micros, credit.idempotency_key) == (
        EntryKind.WALLET_CREDIT,
        14_305,
        f"wallet-included:{usage_user.pk}:2026-12-31:14305",
    )
    assert account_of(usage_user).balance_micros == 1_000_000 - 1  # our ceil of the fee
    # A new month starts the counter again; allowance usage that no local debit paid
    # never lifts the balance above pymthouse's prepaid (granted − consumed).
    wallet_mirror_apply(
        user_id=usage_user.pk,
        reading=replace(paid, included_consumed_micros=7, included_period="2027-01-31"),
    )
    assert account_of(usage_user).balance_micros == 1_000_000
    assert_ledger_matches(usage_user)


def test_entries_before_the_mirror_explain_no_pymthouse_consumption(
    usage_user: Any, settings: Any
) -> None:
    from tests.billing.conftest import grant

    settings.BILLING_MODE = "owner_rollup"  # the account's history before the switch
    grant(usage_user, 50_000)
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)
    before = LedgerEntry.objects.filter(account_id=usage_user.pk).latest("pk").pk

    settings.BILLING_MODE = "merchant"
    wallet = wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=0, consumed_micros=5_000)
    )
    assert wallet.ledger_baseline_id == before
    debit = LedgerEntry.objects.get(account_id=usage_user.pk, kind=EntryKind.WALLET_DEBIT)
    assert debit.amount_micros == 5_000  # the old usage debit explains none of it
    assert_ledger_matches(usage_user)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("no_payment_method", "You're out of credit. Add credit to keep generating."),
        ("overage_not_available", "your plan doesn't allow spending past $0"),
        ("debt_ceiling_reached", "limit for unbilled usage"),
        ("billing_unavailable", "Billing is unavailable right now"),
    ],
)
def test_admission_respects_pymthouses_blocked_reason(
    usage_user: Any, reason: str, words: str
) -> None:
    wallet_mirror_apply(
        user_id=usage_user.pk,
        reading=reading(granted_micros=1_000_000, can_spend=False, status="blocked", reason=reason),
    )
    generation = new_generation(usage_user)
    with pytest.raises(CreditRefusedError) as refused:
        admit_generation(generation)
    assert refused.value.code == reason
    assert words in refused.value.message
    assert not Hold.objects.filter(generation_id=generation.pk).exists()
    assert kinds(usage_user) == [(EntryKind.WALLET_CREDIT, 1_000_000)]


def test_admission_without_any_wallet_read_is_refused(usage_user: Any) -> None:
    generation = new_generation(usage_user)
    with pytest.raises(CreditRefusedError) as refused:
        admit_generation(generation)
    assert refused.value.code == "wallet_unknown"
    assert kinds(usage_user) == []


def test_local_holds_cap_concurrent_images_against_the_mirrored_balance(usage_user: Any) -> None:
    wallet_mirror_apply(
        user_id=usage_user.pk, reading=reading(granted_micros=2 * ESTIMATE_HOLD_MICROS + 1)
    )
    first, second, third = (new_generation(usage_user) for _ in range(3))
    admit_generation(first)
    admit_generation(second)
    with pytest.raises(CreditRefusedError) as refused:
        admit_generation(third)  # pymthouse still says canSpend: the local hold refuses
    assert refused.value.code == "insufficient_credit"
    assert account_of(usage_user).held_micros == 2 * ESTIMATE_HOLD_MICROS
    assert not Hold.objects.filter(generation_id=third.pk).exists()


def test_flat_price_plans_charge_the_network_fee_in_merchant_mode(
    usage_user: Any, plans: Any
) -> None:
    from billing.services import account_change_plan

    account_change_plan(
        user=usage_user, plan=plans["pay-per-image"], acting_user=None, reason="test"
    )
    wallet_mirror_apply(user_id=usage_user.pk, reading=reading(granted_micros=1_000_000))
    generation = new_generation(usage_user)
    admit_generation(generation)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE_WEI)
    debit = LedgerEntry.objects.get(account_id=usage_user.pk, kind=EntryKind.USAGE_DEBIT)
    assert debit.amount_micros == FEE_MICROS  # not the plan's $0.02
