"""Promotional credit: spent before purchased credit, earliest expiry first; an expired
lot's rest taken back exactly once (beat or admission, whichever first), never what
images in progress hold; labelled on the pages, receipts, CSV, API and admin."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.models import User
from billing.errors import CreditRefusedError
from billing.models import (
    Account,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    PromotionalCredit,
)
from billing.selectors import account_credit_split
from billing.services import account_change_plan, promotion_grant, promotions_expire_due
from billing.services.ledger import credit_deduct
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    grant,
    new_generation,
)

pytestmark = pytest.mark.django_db

#: The sandbox runner's fee per call and what pay-as-you-go charges for it (× 6/5 at
#: $3,000/ETH, rounded up); the hold before any price is observed is 18,000 µ$.
FEE = 4_768_371_000_000
CHARGE = 17_167
HOLD = 18_000


def promo(user: User, amount: int, *, key: str, days: float | None = None) -> PromotionalCredit:
    now = timezone.now().replace(microsecond=0)
    expires = None if days is None else now + timedelta(days=days)
    entry = promotion_grant(
        user=user,
        amount_micros=amount,
        reason=f"promo {key}",
        acting_user=None,
        idempotency_key=key,
        expires_at=expires,
    )
    return PromotionalCredit.objects.get(entry=entry)


def expire_now(lot: PromotionalCredit) -> None:
    """Let time pass the lot's expiry (the lot is state beside the ledger, not an entry)."""
    PromotionalCredit.objects.filter(pk=lot.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )


def remaining(lot: PromotionalCredit) -> tuple[int, bool]:
    lot.refresh_from_db()
    return lot.remaining_micros, lot.closed_at is not None


def image(user: User, *, charge: bool = True) -> Any:
    generation = new_generation(user)
    admit_generation(generation)
    if charge:
        charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)
    return generation


def test_promotional_credit_is_spent_first_earliest_expiry_first(usage_user: User) -> None:
    grant(usage_user, 1_000_000)  # purchased
    later = promo(usage_user, 50_000, key="ten-days", days=10)
    never = promo(usage_user, 20_000, key="no-expiry")
    sooner = promo(usage_user, 30_000, key="five-days", days=5)

    image(usage_user)
    assert remaining(sooner) == (30_000 - CHARGE, False)
    assert remaining(later) == (50_000, False)

    image(usage_user)  # 12,833 left of the sooner lot, the other 4,334 from the later one
    assert remaining(sooner) == (0, True)
    assert remaining(later) == (50_000 - (CHARGE - 12_833), False)
    assert remaining(never) == (20_000, False)

    account = account_of(usage_user)
    assert account.balance_micros == 1_100_000 - 2 * CHARGE
    split = account_credit_split(account=account)
    assert split.purchased_micros == 1_000_000  # untouched
    assert split.promotional_micros == 45_666 + 20_000
    assert [lot.remaining_micros for lot in split.lots] == [45_666, 20_000]
    assert_ledger_matches(usage_user)


def test_a_staff_deduct_takes_promotional_credit_first(usage_user: User) -> None:
    grant(usage_user, 500_000)
    lot = promo(usage_user, 300_000, key="p", days=3)
    credit_deduct(
        user=usage_user, amount_micros=400_000, reason="x", acting_user=None, idempotency_key="d"
    )
    assert remaining(lot) == (0, True)
    split = account_credit_split(account=account_of(usage_user))
    assert (split.promotional_micros, split.purchased_micros) == (0, 400_000)


def test_expiry_takes_the_rest_once_whether_admission_or_the_beat_sees_it_first(
    usage_user: User, make_user: Any, plans: Any
) -> None:
    grant(usage_user, 100_000)
    lot = promo(usage_user, 50_000, key="soon", days=1)
    image(usage_user)  # spends 17,167 of the lot
    expire_now(lot)

    image(usage_user, charge=False)  # admission sees it first
    expiries = LedgerEntry.objects.filter(kind=EntryKind.PROMOTION_EXPIRY)
    assert [(e.amount_micros, e.idempotency_key) for e in expiries] == [
        (50_000 - CHARGE, f"promotion_expiry:{lot.pk}")
    ]
    assert promotions_expire_due(now=timezone.now()) == 0
    assert promotions_expire_due(now=timezone.now()) == 0
    assert expiries.count() == 1
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (100_000, HOLD)
    assert remaining(lot) == (0, True)
    assert lot.expiry_entry_id == expiries.get().pk

    # The other order: the beat first, then admission writes nothing more.
    other = make_user()
    account_change_plan(user=other, plan=plans["pay-as-you-go"], acting_user=None, reason="t")
    grant(other, 100_000, key="other")
    other_lot = promo(other, 40_000, key="other-soon", days=1)
    expire_now(other_lot)
    assert promotions_expire_due(now=timezone.now()) == 1
    image(other, charge=False)
    assert list(
        LedgerEntry.objects.filter(
            account_id=other.pk, kind=EntryKind.PROMOTION_EXPIRY
        ).values_list("amount_micros", flat=True)
    ) == [40_000]
    assert account_of(other).balance_micros == 100_000
    assert_ledger_matches(usage_user)
    assert_ledger_matches(other)


def test_expiry_never_takes_what_an_image_in_progress_holds(usage_user: User) -> None:
    lot = promo(usage_user, 50_000, key="only", days=1)
    generation = image(usage_user, charge=False)  # holds 18,000 of it
    expire_now(lot)
    assert promotions_expire_due(now=timezone.now()) == 1
    expiry = LedgerEntry.objects.get(kind=EntryKind.PROMOTION_EXPIRY)
    assert expiry.amount_micros == 50_000 - HOLD
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (HOLD, HOLD)

    charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)  # fully collected
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.status, hold.charged_micros, hold.absorbed_micros) == (
        HoldStatus.SETTLED,
        CHARGE,
        0,
    )
    assert account_of(usage_user).balance_micros == HOLD - CHARGE
    assert_ledger_matches(usage_user)


def test_holds_count_against_the_earliest_expiring_lot_first(usage_user: User) -> None:
    first = promo(usage_user, 10_000, key="first", days=1)
    second = promo(usage_user, 50_000, key="second", days=2)
    image(usage_user, charge=False)  # 18,000 held: all of `first`, 8,000 of `second`
    expire_now(first)
    assert promotions_expire_due(now=timezone.now()) == 1
    assert LedgerEntry.objects.get(kind=EntryKind.PROMOTION_EXPIRY).amount_micros == 0
    assert remaining(first) == (0, True)
    assert remaining(second) == (50_000, False)

    expire_now(second)
    assert promotions_expire_due(now=timezone.now()) == 1
    # 60,000 balance, 18,000 held: `first` covered 10,000 of the hold, but it is closed
    # now, so the whole hold counts against `second`: 32,000 taken, 18,000 kept.
    assert list(
        LedgerEntry.objects.filter(kind=EntryKind.PROMOTION_EXPIRY)
        .order_by("pk")
        .values_list("amount_micros", flat=True)
    ) == [0, 32_000]
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (28_000, HOLD)
    assert_ledger_matches(usage_user)


def test_a_refused_admission_rolls_its_expiry_back_for_the_beat(usage_user: User) -> None:
    lot = promo(usage_user, 50_000, key="gone", days=1)
    expire_now(lot)
    with pytest.raises(CreditRefusedError), transaction.atomic():  # as generation_create
        image(usage_user, charge=False)  # nothing left once the promotion expires
    assert not LedgerEntry.objects.filter(kind=EntryKind.PROMOTION_EXPIRY).exists()
    assert remaining(lot) == (50_000, False)
    assert promotions_expire_due(now=timezone.now()) == 1
    assert account_of(usage_user).balance_micros == 0


def test_a_promotion_must_expire_in_the_future(usage_user: User) -> None:
    with pytest.raises(ValueError, match="future"):
        promotion_grant(
            user=usage_user,
            amount_micros=1,
            reason="x",
            acting_user=None,
            idempotency_key="past",
            expires_at=timezone.now() - timedelta(minutes=1),
        )
    assert not LedgerEntry.objects.exists()
    assert not PromotionalCredit.objects.exists()


def test_same_key_grants_one_promotion_and_one_lot(usage_user: User) -> None:
    promo(usage_user, 10_000, key="k", days=1)
    promo(usage_user, 10_000, key="k", days=1)
    assert LedgerEntry.objects.count() == 1
    assert PromotionalCredit.objects.count() == 1
    assert account_of(usage_user).balance_micros == 10_000


def test_pages_csv_receipt_and_api_label_promotional_credit(
    usage_user: User, client: Client
) -> None:
    grant(usage_user, 2_000_000)
    lot = promo(usage_user, 7_500_000, key="welcome", days=30)
    client.force_login(usage_user)

    page = client.get("/billing/").content.decode()
    assert 'data-purchased-micros="2000000"' in page
    assert "$2.00</span> purchased credit" in page
    expires = f"{lot.expires_at:%b} {lot.expires_at.day}, {lot.expires_at.year}"
    assert "$7.50</span> promotional credit, expires <time" in page
    assert expires in page
    assert "Promotional credit added" in page

    receipt = client.get(f"/billing/receipts/{lot.entry_id}/").content.decode()
    assert 'data-receipt-credit-type="promotional"' in receipt
    assert "data-receipt-expires" in receipt
    purchased = LedgerEntry.objects.get(kind=EntryKind.GRANT)
    receipt = client.get(f"/billing/receipts/{purchased.pk}/").content.decode()
    assert 'data-receipt-credit-type="purchased"' in receipt
    assert "data-receipt-expires" not in receipt

    body = b"".join(client.get("/billing/ledger.csv").streaming_content).decode()
    rows = {row["entry_id"]: row for row in csv.DictReader(io.StringIO(body))}
    assert rows[str(lot.entry_id)]["kind"] == "promotion"
    assert rows[str(lot.entry_id)]["credit_type"] == "promotional"
    assert rows[str(lot.entry_id)]["promotion_expires_at"] == lot.expires_at.isoformat()
    assert rows[str(purchased.pk)]["credit_type"] == "purchased"
    assert rows[str(purchased.pk)]["promotion_expires_at"] == ""

    data = client.get("/api/v1/billing/account").json()
    assert data["promotional_micros"] == "7500000"
    assert data["purchased_micros"] == "2000000"
    assert data["promotions"] == [
        {
            "remaining_micros": "7500000",
            "expires_at": lot.expires_at.isoformat().replace("+00:00", "Z"),
        }
    ]
    assert data["low_balance"] is None


@pytest.fixture
def staff(make_user: Any) -> User:
    return make_user(email="ops@example.com", is_staff=True, is_superuser=True)


def _credit_form(client: Client, account_pk: int) -> str:
    page = client.get(f"/admin/billing/account/{account_pk}/credit/").content.decode()
    match = re.search(r'name="idempotency_key" value="([0-9a-f]{32})"', page)
    assert match
    return match.group(1)


def test_the_admin_grants_promotional_credit_with_an_expiry(usage_user: User, staff: User) -> None:
    client = Client()
    client.force_login(staff)
    url = f"/admin/billing/account/{usage_user.pk}/credit/"
    page = client.get(url).content.decode()
    assert "Grant promotional credit" in page
    assert "Promotional credit expires (optional)" in page
    key = _credit_form(client, usage_user.pk)
    past = {"operation": "grant", "amount_micros": "3.00", "reason": "welcome",
            "expires_at": "2000-01-01 00:00", "idempotency_key": key}  # fmt: skip
    response = client.post(url, past)
    assert response.status_code == 200
    assert "The expiry must be in the future." in response.content.decode()
    assert not LedgerEntry.objects.exists()

    form = {**past, "expires_at": "2099-12-31 23:59",
            "idempotency_key": _credit_form(client, usage_user.pk)}  # fmt: skip
    assert client.post(url, form).status_code == 302
    lot = PromotionalCredit.objects.get()
    assert (lot.amount_micros, lot.remaining_micros, lot.entry.kind, lot.entry.actor_id) == (
        3_000_000,
        3_000_000,
        EntryKind.PROMOTION,
        staff.pk,
    )
    assert f"{lot.expires_at:%Y-%m-%d %H:%M}" == "2099-12-31 23:59"
    detail = client.get(f"/admin/billing/account/{usage_user.pk}/change/").content.decode()
    assert "$3.00 expires 2099-12-31 23:59 UTC" in detail
    ledger = client.get("/admin/billing/ledgerentry/").content.decode()
    assert "promotional" in ledger
    assert Account.objects.get(pk=usage_user.pk).balance_micros == 3_000_000
