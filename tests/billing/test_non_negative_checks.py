"""The database itself keeps balances and holds ≥ 0, not only Python's parsing.

A raw write (a bad migration, a console UPDATE, another program on the database) that
sets an amount below zero is refused by a CHECK constraint on both backends.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import IntegrityError, connection, transaction

from accounts.models import User
from billing.models import Account, Hold, HoldStatus, Plan
from tests.billing.conftest import account_of, grant, new_generation

pytestmark = pytest.mark.django_db


def _raw_update(table: str, column: str, value: int, where: str, key: object) -> None:
    """An UPDATE straight to the database, bypassing WeiField's parsing."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET "{column}" = %s WHERE "{where}" = %s',
            [str(value), key],
        )


@pytest.mark.parametrize(
    ("column", "value"),
    [("held_micros", -1), ("balance_micros", -1), ("held_micros", -(10**30))],
)
def test_an_account_amount_below_zero_is_refused(
    make_user: Callable[..., User], plans: dict[str, Plan], column: str, value: int
) -> None:
    user = make_user()
    grant(user, 1_000)
    with pytest.raises(IntegrityError):
        _raw_update("billing_account", column, value, "user_id", user.pk)
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (1_000, 0)


def test_both_account_amounts_below_zero_are_refused(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    """balance ≥ held alone lets ``balance = held = −5`` through; each ≥ 0 does not."""
    user = make_user()
    grant(user, 1_000)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            'UPDATE "billing_account" SET "balance_micros" = %s, "held_micros" = %s '
            'WHERE "user_id" = %s',
            ["-5", "-5", user.pk],
        )
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (1_000, 0)


@pytest.mark.parametrize("column", ["amount_micros", "charged_micros"])
def test_a_hold_amount_below_zero_is_refused(
    usage_user: User, plans: dict[str, Plan], column: str
) -> None:
    account = account_of(usage_user)
    generation = new_generation(usage_user)
    hold = Hold.objects.create(
        generation_id=generation.pk, account=account, amount_micros=700, status=HoldStatus.OPEN
    )
    with pytest.raises(IntegrityError):
        _raw_update("billing_hold", column, -1, "id", hold.pk)
    hold.refresh_from_db()
    assert (hold.amount_micros, hold.charged_micros) == (700, None)


def test_zero_and_uint256_max_stay_allowed(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    grant(user, 0)
    assert Account.objects.filter(pk=user.pk).update(balance_micros=2**256 - 1, held_micros=0) == 1
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (2**256 - 1, 0)
