from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from billing.db import WeiSum
from billing.errors import IdempotencyConflictError, InsufficientFundsError
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    LedgerEntry,
    LedgerImmutableError,
    LedgerRejection,
    Plan,
    PlanAssignment,
)
from billing.selectors import account_ledger_totals
from billing.services import (
    account_change_plan,
    account_open,
    credit_deduct,
    credit_grant,
    ledger_correct,
    subscription_renew,
)
from tests.billing.conftest import grant

pytestmark = pytest.mark.django_db
MAX = 2**256 - 1


def test_new_account_gets_the_default_plan_with_history(
    make_user: Callable[..., User], settings
) -> None:
    settings.BILLING_DEFAULT_PLAN = "free"
    user = make_user()
    account = account_open(user_id=user.pk)
    assert account.plan.slug == "free"
    assert account.balance_micros == 0
    assert account.held_micros == 0
    assert list(
        PlanAssignment.objects.filter(account=account).values_list("plan__slug", flat=True)
    ) == ["free"]
    assert account_open(user_id=user.pk).pk == account.pk
    assert Account.objects.count() == 1


def test_grant_twice_with_one_key_grants_once(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    staff = make_user(is_staff=True)
    user = make_user()
    first = credit_grant(
        user=user,
        amount_micros=10**30 + 1,
        reason="top-up",
        acting_user=staff,
        idempotency_key="k1",
    )
    second = credit_grant(
        user=user,
        amount_micros=10**30 + 1,
        reason="top-up",
        acting_user=staff,
        idempotency_key="k1",
    )
    assert first.pk == second.pk
    assert LedgerEntry.objects.count() == 1
    assert Account.objects.get(pk=user.pk).balance_micros == 10**30 + 1
    assert first.actor == staff
    assert first.kind == EntryKind.GRANT
    with pytest.raises(IdempotencyConflictError):
        credit_grant(
            user=user, amount_micros=5, reason="x", acting_user=staff, idempotency_key="k1"
        )
    assert Account.objects.get(pk=user.pk).balance_micros == 10**30 + 1


def test_deduct_beyond_available_is_refused_and_stays_refused(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    grant(user, 100)
    with pytest.raises(InsufficientFundsError):
        credit_deduct(
            user=user, amount_micros=101, reason="fix", acting_user=None, idempotency_key="d1"
        )
    assert LedgerEntry.objects.filter(kind=EntryKind.DEDUCT).count() == 0
    assert Account.objects.get(pk=user.pk).balance_micros == 100
    assert LedgerRejection.objects.filter(idempotency_key="deduct:d1").count() == 1
    grant(user, 1000, key="top-up")
    # Same key after a top-up: still refused (a retry is not a new decision).
    with pytest.raises(InsufficientFundsError):
        credit_deduct(
            user=user, amount_micros=101, reason="fix", acting_user=None, idempotency_key="d1"
        )
    assert Account.objects.get(pk=user.pk).balance_micros == 1100
    entry = credit_deduct(
        user=user, amount_micros=101, reason="fix", acting_user=None, idempotency_key="d2"
    )
    assert entry.balance_after_micros == 999
    assert Account.objects.get(pk=user.pk).balance_micros == 999


def test_entries_are_never_updated_or_deleted(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    grant(user, 5)
    entry = LedgerEntry.objects.get()
    entry.amount_micros = 6
    with pytest.raises(LedgerImmutableError):
        entry.save()
    with pytest.raises(LedgerImmutableError):
        entry.delete()
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount_micros=6)
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.all().delete()
    assert LedgerEntry.objects.get().amount_micros == 5


def test_the_database_refuses_raw_updates_and_deletes_of_entries(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    grant(user, 5)
    table = LedgerEntry._meta.db_table
    statements = [f"UPDATE {table} SET reason = 'x'"]
    if connection.vendor == "postgresql":
        # SQLite's test flush deletes rows, so there only the ORM guards refuse DELETE.
        statements.append(f"DELETE FROM {table}")
    for sql in statements:
        with pytest.raises(Exception, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql)
    assert LedgerEntry.objects.get().reason == "test credit"


def test_corrections_are_new_entries_and_totals_match_the_ledger(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    staff = make_user(is_staff=True)
    user = make_user()
    grant(user, MAX - 10)
    original = LedgerEntry.objects.get()
    ledger_correct(
        entry=original, credit=False, amount_micros=MAX - 20, reason="typo", acting_user=staff,
        idempotency_key="c1",
    )  # fmt: skip
    ledger_correct(
        entry=original, credit=True, amount_micros=3, reason="goodwill", acting_user=staff,
        idempotency_key="c2",
    )  # fmt: skip
    account = Account.objects.get(pk=user.pk)
    assert account.balance_micros == 13
    assert LedgerEntry.objects.get(pk=original.pk).amount_micros == MAX - 10
    assert original.corrections.count() == 2
    totals = account_ledger_totals(account=account)
    assert (totals.balance_micros, totals.held_micros) == (13, 0)
    credits = LedgerEntry.objects.filter(effect=EntryEffect.CREDIT).aggregate(
        t=WeiSum("amount_micros")
    )
    assert credits["t"] == MAX - 7


def test_subscription_renewal_records_its_fee_once_per_period(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    account_change_plan(user=user, plan=plans["studio"], acting_user=None, reason="sub")
    start = timezone.now()
    for _ in range(2):
        subscription_renew(
            user=user, starts_at=start, ends_at=start + timedelta(days=30), acting_user=None
        )
    fees = LedgerEntry.objects.filter(kind=EntryKind.SUBSCRIPTION_FEE)
    assert [(e.amount_micros, e.effect) for e in fees] == [(29_000_000, EntryEffect.RECORD)]  # $29
    account = Account.objects.get(pk=user.pk)
    assert account.balance_micros == 0
    assert account.subscription_ends_at == start + timedelta(days=30)
