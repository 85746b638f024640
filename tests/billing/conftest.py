from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from billing.models import Account, Hold, Plan
from billing.selectors import account_ledger_totals
from billing.services import (
    account_change_plan,
    credit_grant,
    generation_admit,
    generation_charge_settle,
    generation_usage_settle,
    plans_seed,
)
from inference.models import AdmittedImage, Generation
from inference.selectors import generations_counted_this_month
from inference.services.admission import generation_description
from integrations.livepeer.types import PaymentRecord

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
        user=user, amount_micros=amount, reason="test credit", acting_user=None, idempotency_key=key
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
    assert (totals.balance_micros, totals.held_micros) == (
        account.balance_micros,
        account.held_micros,
    )


# Billing's hooks take values; these call them as the product's callers do (inference's
# admission step and payment confirm, the usage mirror), reading the generation row.


def admit_generation(generation: Generation) -> None:
    """``billing.services.generation_admit`` as ``inference.services.admission`` calls it
    (after recording the admitted image, which the count reads)."""
    AdmittedImage.objects.get_or_create(
        generation_id=generation.pk,
        defaults={"owner_id": generation.owner_id, "admitted_at": generation.created_at},
    )
    generation_admit(
        owner_id=generation.owner_id,
        generation_id=generation.pk,
        model_id=generation.model_id,
        images_this_month=generations_counted_this_month(owner_id=generation.owner_id),
        description=generation_description(generation),
    )


def charge_at_payment(*, generation_id: Any, expected_fee_wei: int | None) -> None:
    """``generation_charge_settle`` as the payment confirm calls it: with the payment
    record (the price fields as the test recorded them on the row)."""
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None:
        return
    generation_charge_settle(
        owner_id=generation.owner_id,
        generation_id=generation.pk,
        model_id=generation.model_id,
        record=PaymentRecord(
            manifest_id=generation.manifest_id or None,
            runner_url=generation.runner_url or None,
            price_wei=generation.price_wei,
            price_unit=generation.price_unit,
            units_paid=generation.units_paid,
            expected_fee_wei=expected_fee_wei,
        ),
    )


def usage_settle(
    *, generation_id: Any, fee_wei: int, usage_ref: str, usd_micros_exact: Any = None
) -> bool:
    """``generation_usage_settle`` as the usage mirror calls it (the owner from the
    joined generation, or from the hold when the generation is gone)."""
    owner_id = (
        Generation.objects.filter(pk=generation_id).values_list("owner_id", flat=True).first()
    )
    if owner_id is None:
        owner_id = (
            Hold.objects.filter(generation_id=generation_id)
            .values_list("account_id", flat=True)
            .first()
        )
    if owner_id is None:
        return False
    return generation_usage_settle(
        owner_id=owner_id,
        generation_id=generation_id,
        fee_wei=fee_wei,
        usage_ref=usage_ref,
        usd_micros_exact=usd_micros_exact,
    )


def charge_micros(fee_wei: int, *, numerator: int = 6, denominator: int = 5) -> int:
    """The pay-as-you-go charge for ``fee_wei`` at the test rate ($3,000/ETH): the fee in
    USD micros × 6/5, rounded up once. Exact integers: fee × 3,000 × 10⁶ / 10¹⁸ × 6/5."""
    return -((-fee_wei * 3000 * 10**6 * numerator) // (10**18 * denominator))
