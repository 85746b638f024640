"""Prices: what runners asked, the most the next image may cost, and what a plan charges.

* ``price_observe`` remembers a runner's price per model at every settlement.
* ``max_fee_estimate`` is the most one image's payment may cost at the network (the
  hold is the plan's charge for it).
* ``plan_charge`` is what a plan charges for a network fee (``billing.plan_policy``).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import ObservedPrice, Plan
from billing.money import apply_ratio
from billing.plan_policy import plan_policy
from integrations.pymthouse.money import parse_wei


def estimated_fee_wei() -> int:
    return parse_wei(str(settings.BILLING_ESTIMATED_FEE_WEI))


def _markup() -> Fraction:
    return Fraction(Decimal(str(settings.LIVEPEER_MAX_PRICE_MARKUP)))


def price_observe(*, model_id: str, price_wei: int, units_per_payment: int) -> None:
    """Remember a runner's price for ``model_id``: wei per unit, and the units one payment
    buys (1 for ``fixed``, the seconds of a first ``live`` payment).

    Runs in every settlement: it writes (and so locks the model's row until commit) only
    when the price changed, so settlements of one model by many users do not queue here.
    """
    current = (
        ObservedPrice.objects.filter(model_id=model_id)
        .values_list("price_wei", "units_per_payment")
        .first()
    )
    if current == (price_wei, units_per_payment):
        return
    if current is not None:
        ObservedPrice.objects.filter(model_id=model_id).update(
            price_wei=price_wei, units_per_payment=units_per_payment, observed_at=timezone.now()
        )
        return
    try:
        with transaction.atomic():
            ObservedPrice.objects.create(
                model_id=model_id, price_wei=price_wei, units_per_payment=units_per_payment
            )
    except IntegrityError:  # another settlement recorded it first
        ObservedPrice.objects.filter(model_id=model_id).update(
            price_wei=price_wei, units_per_payment=units_per_payment
        )


def max_fee_estimate(*, model_id: str) -> int:
    """The most one image's payment may cost at the network: what the client would accept.

    The last observed runner price for the model, raised by the ``maxPrice`` markup
    exactly as the client computes ``maxPrice`` (per unit, rounded up), times the units
    one payment buys. Without an observation, the configured per-image estimate
    ``BILLING_ESTIMATED_FEE_WEI``.
    """
    observed = ObservedPrice.objects.filter(model_id=model_id).first()
    if observed is None:
        return estimated_fee_wei()
    markup = _markup()
    return (
        apply_ratio(observed.price_wei, markup.numerator, markup.denominator)
        * observed.units_per_payment
    )


def plan_charge(*, plan: Plan, fee_wei: int) -> int:
    """What ``plan`` charges the user for a network fee of ``fee_wei`` (its policy)."""
    return plan_policy(plan).charge(plan, fee_wei=fee_wei)
