"""Exact money arithmetic: wei and USD micros are integers, the ETH/USD rate a Decimal."""

from __future__ import annotations

import logging
from decimal import Decimal
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


EXACT_FRACTION_DIGITS = 12


def format_exact_usd_micros(micros: Fraction) -> str:
    """``networkFeeUsdExact``: exact USD **micros** (not dollars), as pymthouse formats them.

    Mirrors pymthouse ``formatExactUsdMicros`` (``src/lib/openmeter/usage-read.ts``):
    ``exact.toFixed(12)`` with trailing zeros and then a trailing ``"."`` trimmed, and
    ``"0"`` for zero. So ``Fraction(29999996338176, 10**6)`` gives ``"29999996.338176"``
    (about $30) and ``Fraction(932, 1000)`` gives ``"0.932"`` (0.932 micros, $0.000000932).

    Rounding: ``toFixed`` picks the integer ``n`` nearest to ``x * 10**12`` and, on a
    tie, the larger one (ECMA-262 ``Number.prototype.toFixed``), i.e. half-up for the
    non-negative values seen here. We apply that rule to the *exact* value (integers
    only, no Decimal context, no float), so a tie rounds up, not half-even.

    Deliberate difference from upstream: pymthouse holds ``exact`` in a JS double (a sum
    of per-event doubles), so its digits past ~15-16 significant figures are binary
    noise. For 4 999 999 389 696 wei at $3000/ETH the exact value is 14999.998169088
    micros, which upstream prints as ``"14999.998169087999"``; 4 768 371 000 000 wei
    is 14305.113 micros, upstream ``"14305.112999999999"``. The sandbox emits the exact
    decimal instead (``"14999.998169088"``, ``"14305.113"``). Upstream also switches to
    exponent notation at 1e21 micros (``toFixed`` returns ``"1e+21"``); the sandbox
    keeps plain digits at any size.
    """
    if micros < 0:
        raise ValueError("exact USD micros must not be negative")
    scale = 10**EXACT_FRACTION_DIGITS
    # floor(x * scale + 1/2): the nearest integer, ties up.
    scaled = (2 * micros.numerator * scale + micros.denominator) // (2 * micros.denominator)
    if scaled == 0:
        return "0"
    whole, fraction = divmod(scaled, scale)
    digits = f"{fraction:0{EXACT_FRACTION_DIGITS}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)
