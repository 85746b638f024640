"""Prices: what runners asked, the most the next image may cost, and what a plan charges.

* ``price_observe`` remembers a runner's price per model at every settlement.
* ``max_fee_estimate`` is the most one image's payment may cost at the network (the
  hold is the plan's charge for it).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from fractions import Fraction

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import ObservedPrice
from billing.money import apply_ratio
from integrations.pymthouse.money import parse_wei

logger = logging.getLogger(__name__)


def estimated_fee_wei() -> int:
    return parse_wei(str(settings.BILLING_ESTIMATED_FEE_WEI))


def _markup() -> Fraction:
    return Fraction(Decimal(str(settings.LIVEPEER_MAX_PRICE_MARKUP)))


def _jump_factor() -> Fraction:
    return Fraction(Decimal(str(settings.BILLING_PRICE_JUMP_FACTOR)))


def price_observe(*, model_id: str, price_wei: int, units_per_payment: int) -> bool:
    """Remember a runner's price for ``model_id``: wei per unit, and the units one payment
    buys (1 for ``fixed``, the seconds of a first ``live`` payment). Returns whether it
    was adopted as the base of the next holds.

    A payment that costs more than ``BILLING_PRICE_JUMP_FACTOR`` × the adopted one is not
    adopted: it is kept beside it (``jumped_*``) for staff, who adopt it in the admin, so
    one spike never silently becomes every user's hold. Runs in every settlement: it
    writes (and so locks the model's row until commit) only when something changed.
    """
    current = ObservedPrice.objects.filter(model_id=model_id).first()
    if current is None:
        try:
            with transaction.atomic():
                ObservedPrice.objects.create(
                    model_id=model_id, price_wei=price_wei, units_per_payment=units_per_payment
                )
        except IntegrityError:  # another settlement recorded it first
            current = ObservedPrice.objects.get(model_id=model_id)
        else:
            return True
    if (current.price_wei, current.units_per_payment) == (price_wei, units_per_payment):
        if current.jumped_price_wei is not None:
            ObservedPrice.objects.filter(pk=current.pk).update(
                jumped_price_wei=None, jumped_units_per_payment=None, jumped_at=None
            )
        return True
    adopted_fee = current.price_wei * current.units_per_payment
    if price_wei * units_per_payment > adopted_fee * _jump_factor():
        if (current.jumped_price_wei, current.jumped_units_per_payment) != (
            price_wei,
            units_per_payment,
        ):
            logger.warning(
                "billing: runner price for %s jumped from %s to %s wei per payment; "
                "not adopted (staff: Observed prices)",
                model_id,
                adopted_fee,
                price_wei * units_per_payment,
            )
            ObservedPrice.objects.filter(pk=current.pk).update(
                jumped_price_wei=price_wei,
                jumped_units_per_payment=units_per_payment,
                jumped_at=timezone.now(),
            )
        return False
    ObservedPrice.objects.filter(pk=current.pk).update(
        price_wei=price_wei,
        units_per_payment=units_per_payment,
        observed_at=timezone.now(),
        jumped_price_wei=None,
        jumped_units_per_payment=None,
        jumped_at=None,
    )
    return True


def price_jump_adopt(*, model_id: str) -> bool:
    """Staff: adopt a jumped price as the base of holds (the admin's action)."""
    current = ObservedPrice.objects.filter(model_id=model_id).first()
    if current is None or current.jumped_price_wei is None or not current.jumped_units_per_payment:
        return False
    ObservedPrice.objects.filter(pk=current.pk).update(
        price_wei=current.jumped_price_wei,
        units_per_payment=current.jumped_units_per_payment,
        observed_at=timezone.now(),
        jumped_price_wei=None,
        jumped_units_per_payment=None,
        jumped_at=None,
    )
    return True


def max_fee_estimates(*, model_ids: list[str]) -> dict[str, int]:
    """The most one image's payment may cost at the network, per model (one query).

    The last observed runner price for the model, raised by the ``maxPrice`` markup
    exactly as the client computes ``maxPrice`` (per unit, rounded up), times the units
    one payment buys. Without an observation, the configured per-image estimate
    ``BILLING_ESTIMATED_FEE_WEI``.
    """
    markup = _markup()
    observed = {
        model_id: apply_ratio(price_wei, markup.numerator, markup.denominator) * units
        for model_id, price_wei, units in ObservedPrice.objects.filter(
            model_id__in=model_ids
        ).values_list("model_id", "price_wei", "units_per_payment")
    }
    estimate = estimated_fee_wei()
    return {model_id: observed.get(model_id, estimate) for model_id in model_ids}


def max_fee_estimate(*, model_id: str) -> int:
    """``max_fee_estimates`` for one model."""
    return max_fee_estimates(model_ids=[model_id])[model_id]
