"""Exact money arithmetic: wei and USD micros are integers, the ETH/USD rate a Decimal."""

from __future__ import annotations

import logging
from decimal import Decimal, localcontext
from fractions import Fraction

logger = logging.getLogger(__name__)

WEI_PER_ETH = 10**18
MICROS_PER_USD = 10**6
# usd_micros = fee_wei / 1e18 ETH * eth_usd USD/ETH * 1e6 micros/USD = fee_wei * eth_usd / 1e12
WEI_USD_TO_MICROS_DIVISOR = WEI_PER_ETH // MICROS_PER_USD


def usd_micros_exact(fee_wei: int, eth_usd: Decimal) -> Fraction:
    """The exact USD-micros value of ``fee_wei`` at ``eth_usd``, as a Fraction (no rounding)."""
    return Fraction(fee_wei) * Fraction(eth_usd) / WEI_USD_TO_MICROS_DIVISOR


def usd_micros_for_fee(fee_wei: int, eth_usd: Decimal) -> int:
    """USD micros charged for ``fee_wei``: ``ceil(fee_wei * eth_usd / 10**12)``.

    Rounding: always UP to the next whole micro, once per usage event (ticket), so the
    sandbox never under-charges; a fee of 0 wei costs 0 micros. Computed with integers
    and Fractions only, never floats. Aggregates (usage totals, balances) are sums of
    these per-event integers, so ``consumed == sum(events.usdMicros)`` holds exactly.

    This function's output must never change for a given input: tests and the Django
    ledger compare against it.
    """
    exact = usd_micros_exact(fee_wei, eth_usd)
    return -((-exact.numerator) // exact.denominator)


def format_usd_exact(micros: Fraction) -> str:
    """An exact decimal USD string for ``micros`` (e.g. Fraction(29999996338176, 10**9) micros).

    The denominators only hold factors 2 and 5, so the decimal expansion terminates;
    a wide local context keeps it exact.
    """
    with localcontext() as context:
        context.prec = 120
        usd = Decimal(micros.numerator) / Decimal(micros.denominator * MICROS_PER_USD)
        text = format(usd.normalize(), "f")
    return text
