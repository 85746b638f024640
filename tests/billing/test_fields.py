from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from billing.fields import WeiFormField, parse_wei
from inference.models import Generation
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

BIG = [10**30, 10**30 + 1, 2**256 - 1, 0]


@pytest.mark.parametrize("amount", BIG)
def test_wei_round_trips_exactly_through_the_database(
    amount: int, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks():
        user = UserFactory()
    generation = Generation.objects.create(
        owner=user, prompt="p", model_id="m", width=512, height=512, cost_wei=amount
    )

    reloaded = Generation.objects.get(pk=generation.pk)
    assert type(reloaded.cost_wei) is int
    assert reloaded.cost_wei == amount
    assert Generation.objects.filter(cost_wei=amount).count() == 1


@pytest.mark.parametrize(
    "bad",
    ["1e30", "1E+30", "１２３", "1_000", "-5", "1.5", "", "9" * 79, 2**256, -1, 1.0, None, True],
)
def test_invalid_wei_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_wei(bad)


def test_the_form_field_parses_digits_and_rejects_exponents() -> None:
    field = WeiFormField()
    assert field.clean("1000000000000000000000000000001") == 10**30 + 1
    with pytest.raises(ValidationError):
        field.clean("1e30")
