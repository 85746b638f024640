"""Exact money: parse typed and transported amounts, format them for people.

Every amount is an ``int``: wei (0 … 2**256 - 1) or USD micros (1 USD = 1,000,000).
The grammar is pymthouse's (``integrations.pymthouse.money``), not a second one: ASCII
digits only, no exponent, separator, space, point, plus sign or full-width digit.
Values typed by people or sent to our API must be *strings*; a JSON number is refused
because a large one has already been rounded to a double on its way to us.

Display never goes through ``float``: ETH and USD are printed from integer quotient
and remainder (the tutorial's ``Number(BigInt(x)) / 1e18`` is the bug this avoids).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from integrations.pymthouse.money import (
    MAX_UINT256,
    MoneyParseError,
    parse_decimal,
    parse_usd_micros,
    parse_wei,
)

__all__ = [
    "MAX_UINT256",
    "WEI_PER_ETH",
    "MoneyParseError",
    "apply_ratio",
    "estimate_usd_micros",
    "format_eth",
    "format_usd_estimate",
    "format_usd_micros",
    "format_wei",
    "parse_eth_usd_rate",
    "parse_usd_micros_text",
    "parse_wei_text",
]

WEI_PER_ETH = 10**18
USD_MICROS_PER_USD = 10**6


def parse_wei_text(value: object) -> int:
    """Wei typed by a person or sent in API JSON: a canonical digit *string* only."""
    if not isinstance(value, str):
        raise MoneyParseError(f"wei must be a string of digits, got {type(value).__name__}")
    return parse_wei(value)


def parse_usd_micros_text(value: object) -> int:
    """USD micros typed by a person or sent in API JSON: a canonical digit string only."""
    if not isinstance(value, str):
        raise MoneyParseError(f"USD micros must be a string of digits, got {type(value).__name__}")
    return parse_usd_micros(value)


def parse_eth_usd_rate(value: object) -> Fraction:
    """An ETH/USD rate setting such as ``"3150.25"``: exact, positive, no float."""
    rate = Fraction(parse_decimal(value))
    if rate <= 0:
        raise MoneyParseError("ETH/USD rate must be positive")
    return rate


def apply_ratio(amount: int, numerator: int, denominator: int) -> int:
    """``amount × numerator / denominator`` rounded up to a whole wei (exact integers)."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("ratio must be non-negative over a positive denominator")
    return -((-amount * numerator) // denominator)


def _group(digits: str) -> str:
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return ",".join(parts)


def _fixed(value: int, scale: int, *, min_places: int, max_places: int) -> str:
    """``value / 10**scale`` as grouped decimal text, truncated to ``max_places``."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**scale)
    frac_text = str(frac).rjust(scale, "0")[:max_places].rstrip("0")
    frac_text = frac_text.ljust(min_places, "0")
    text = _group(str(whole))
    return f"{sign}{text}.{frac_text}" if frac_text else f"{sign}{text}"


def format_wei(wei: int) -> str:
    """Grouped wei: ``1,000,000,000,000,000,000 wei``."""
    return f"{_group(str(wei))} wei"


def format_eth(wei: int, *, places: int = 18) -> str:
    """ETH from wei, exact to ``places`` (default all 18), trailing zeros trimmed.

    ``format_eth(1234500000000000000) == "1.2345 ETH"``. With fewer places the value is
    truncated toward zero and marked ``≈`` unless the dropped digits were zeros.
    """
    text = _fixed(wei, 18, min_places=0, max_places=places)
    exact = places >= 18 or abs(wei) % 10 ** (18 - places) == 0
    return f"{text} ETH" if exact else f"≈{text} ETH"


def format_usd_micros(micros: int) -> str:
    """USD from micros: at least cents, up to all six places: ``$1,234.56``, ``$0.000001``."""
    sign = "-" if micros < 0 else ""
    return f"{sign}${_fixed(abs(micros), 6, min_places=2, max_places=6)}"


def estimate_usd_micros(wei: int, rate: Fraction | Decimal | str) -> int:
    """USD micros for ``wei`` at ``rate`` USD per ETH, rounded half up (exact)."""
    if not isinstance(rate, Fraction):
        rate = parse_eth_usd_rate(str(rate) if isinstance(rate, Decimal) else rate)
    exact = Fraction(wei) * rate * USD_MICROS_PER_USD / WEI_PER_ETH
    return int((exact.numerator * 2 + exact.denominator) // (exact.denominator * 2))


def format_usd_estimate(wei: int, rate: Fraction | Decimal | str | None = None) -> str:
    """``≈ $3.15 (estimate)`` from the ``BILLING_ETH_USD_RATE`` setting, or ``""`` if unset."""
    if rate is None:
        from django.conf import settings

        rate = settings.BILLING_ETH_USD_RATE or None
        if rate is None:
            return ""
    return f"≈ {format_usd_micros(estimate_usd_micros(wei, rate))} (estimate)"
