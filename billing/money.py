"""Exact money: parse typed and transported amounts, format them for people.

Every amount is an ``int``: wei (0 … 2**256 - 1) for what the network costs, USD micros
(1 USD = 1,000,000) for what users pay. Conversions between them use ``Fraction`` only.
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
    "format_usd_micros",
    "format_usd",
    "usd_decimal",
    "format_wei",
    "fraction_ceil",
    "parse_eth_usd_rate",
    "parse_usd_amount",
    "wei_to_usd_micros_exact",
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


def wei_to_usd_micros_exact(wei: int, usd_per_eth: Fraction) -> Fraction:
    """The exact USD micros of ``wei`` at ``usd_per_eth`` (no rounding)."""
    return Fraction(wei) * usd_per_eth * USD_MICROS_PER_USD / WEI_PER_ETH


def fraction_ceil(value: Fraction) -> int:
    """``value`` rounded up to a whole number (exact)."""
    return -((-value.numerator) // value.denominator)


def format_usd(micros: int, *, round_down: bool = False) -> str:
    """Dollars as a payer reads them: ``$1,234.57``; sub-cent digits only below a cent.

    An amount of a cent or more is shown to the cent, rounded half up (``round_down``
    truncates instead: balances, so the page never shows more than is there). An amount
    below a cent shows its significant micros: ``$0.0042``, ``$0.000001``. The exact
    figure is ``format_usd_micros``.
    """
    sign = "-" if micros < 0 else ""
    value = abs(micros)
    if 0 < value < 10_000:
        return f"{sign}${_fixed(value, 6, min_places=2, max_places=6)}"
    cents = value // 10_000 if round_down else (value + 5_000) // 10_000
    return f"{sign}${_fixed(cents, 2, min_places=2, max_places=2)}"


_AMOUNT_CHARS = set("0123456789.")


def parse_usd_amount(value: object, *, maximum: int | None = None) -> int:
    """Dollars typed by a person (``"12.50"``, ``"$0.25"``, ``" 5 "``) to exact micros.

    Surrounding spaces and one leading ``$`` are allowed; then ASCII digits with at most
    one point and at most six decimals. No sign, exponent, separator or full-width digit.
    Messages are written for the person who typed it.
    """
    if not isinstance(value, str):
        raise MoneyParseError("Enter an amount in dollars, such as 12.50.")
    text = value.strip()
    text = text.removeprefix("$").strip()
    if not text or not set(text) <= _AMOUNT_CHARS or text.count(".") > 1 or text == ".":
        raise MoneyParseError("Enter an amount in dollars, such as 12.50.")
    whole, _, fraction = text.partition(".")
    if len(fraction) > 6:
        raise MoneyParseError("Amounts go down to $0.000001 (six decimal places) at most.")
    micros = int(whole or "0") * USD_MICROS_PER_USD + int(fraction.ljust(6, "0") or "0")
    if maximum is not None and micros > maximum:
        raise MoneyParseError(f"That amount is too large: at most {format_usd(maximum)}.")
    return micros


def usd_decimal(micros: int) -> str:
    """Exact dollars as plain decimal text for files: ``17164`` → ``0.017164``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), USD_MICROS_PER_USD)
    return f"{sign}{whole}.{frac:06d}"
