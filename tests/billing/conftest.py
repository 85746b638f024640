from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from billing.models import Account, Plan
from billing.selectors import account_ledger_totals
from billing.services import account_change_plan, credit_grant, plans_seed
from inference.models import Generation

_serial = itertools.count()


@pytest.fixture
def make_user() -> Callable[..., User]:
    """A plain user row (no provisioning task, so no sandbox needed)."""

    def make(**kwargs: Any) -> User:
        kwargs.setdefault("email", f"billing-{next(_serial)}@example.com")
        return User.objects.create(**kwargs)

    return make


@pytest.fixture
def plans(db: Any) -> dict[str, Plan]:
    return {plan.slug: plan for plan in plans_seed()}


@pytest.fixture
def usage_user(make_user: Callable[..., User], plans: dict[str, Plan]) -> User:
    """A user on the pay-as-you-go plan (× 6/5) with no credit yet."""
    user = make_user()
    account_change_plan(
        user=user, plan=plans["pay-as-you-go"], acting_user=None, reason="test setup"
    )
    return user


def grant(user: User, amount: int, key: str = "setup") -> None:
    credit_grant(
        user=user, amount_wei=amount, reason="test credit", acting_user=None, idempotency_key=key
    )


def new_generation(owner: User, **kwargs: Any) -> Generation:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse",
        "model_id": settings.INFERENCE_MODELS[0],
        "width": 512,
        "height": 512,
    }
    fields.update(kwargs)
    return Generation.objects.create(owner=owner, **fields)


def account_of(user: User) -> Account:
    return Account.objects.get(pk=user.pk)


def assert_ledger_matches(user: User) -> None:
    """The account row's running totals equal the sums of its ledger entries."""
    account = account_of(user)
    totals = account_ledger_totals(account=account)
    assert (totals.balance_wei, totals.held_wei) == (account.balance_wei, account.held_wei)
