"""Exact parsing of pymthouse money and counts. The only place unit strings become ints.

pymthouse sends USD micros (1 USD = 1,000,000) as integer strings (``"4780000"``) and wei
as decimal strings (``"1000000000000000000"``). Both are parsed to ``int``, never to
``float`` (house style R4/R10). The accepted grammar is deliberately narrow, because
Python's ``int()`` is not: it accepts ``" 12 "``, ``"1_000"``, ``"+5"`` and full-width
digits such as ``"１２３"``. Here the only accepted text is ASCII ``0`` or ``[1-9][0-9]*``
(optionally with a leading ``-`` where a signed amount is allowed), with at most 78 digits
and a magnitude of at most ``2**256 - 1`` (the EVM word, the largest wei amount).

A JSON *integer* is accepted only up to ``2**53 - 1``: pymthouse is written in
JavaScript, and a larger JSON number has already been rounded to a double before it
reached us. JSON floats (``1.5``, ``1e21``), ``Decimal``, booleans and ``None`` are
rejected.

``networkFeeUsdExact`` (``byManifest[]`` rows) is the one amount with a fraction: USD
*micros*, not dollars, written by pymthouse ``formatExactUsdMicros``
(``src/lib/openmeter/usage-read.ts``: ``toFixed(12)``, trailing zeros trimmed, ``"0"``
for zero). It parses to a ``Fraction`` of micros, see :func:`parse_exact_usd_micros`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

MAX_UINT256 = 2**256 - 1
MAX_SAFE_JSON_INTEGER = 2**53 - 1
_UNSIGNED = re.compile(r"0|[1-9][0-9]{0,77}", re.ASCII)
_SIGNED = re.compile(r"0|-?[1-9][0-9]{0,77}", re.ASCII)


class MoneyParseError(ValueError):
    """The value is not an exact integer amount in the accepted grammar."""


def _parse(value: object, *, what: str, signed: bool) -> int:
    if isinstance(value, bool):
        raise MoneyParseError(f"{what} must be an integer string, got a boolean")
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_JSON_INTEGER:
            raise MoneyParseError(f"{what} JSON number exceeds 2**53-1 and may be rounded")
        parsed = value
    elif isinstance(value, str):
        pattern = _SIGNED if signed else _UNSIGNED
        if not pattern.fullmatch(value):
            # Do not echo the value: it may be long, and it is upstream data.
            raise MoneyParseError(
                f"{what} must be a canonical {'signed ' if signed else ''}integer string "
                f"(ASCII digits, no sign/space/exponent/point), got {len(value)} chars"
            )
        parsed = int(value)
    else:
        raise MoneyParseError(f"{what} must be an integer string, got {type(value).__name__}")
    if not signed and parsed < 0:
        raise MoneyParseError(f"{what} must not be negative")
    if abs(parsed) > MAX_UINT256:
        raise MoneyParseError(f"{what} exceeds 2**256-1")
    return parsed


def parse_usd_micros(value: object) -> int:
    """Non-negative USD micros (fees, charges, grants): ``"3500010"`` → ``3500010``."""
    # Fast path for the common case (a canonical string under 78 digits is < 2**256).
    if type(value) is str and len(value) < 78 and _UNSIGNED.fullmatch(value):
        return int(value)
    return _parse(value, what="USD micros", signed=False)


def parse_signed_usd_micros(value: object) -> int:
    """USD micros that may go negative (balances in overage): ``"-120000"`` → ``-120000``."""
    return _parse(value, what="USD micros", signed=True)


def parse_wei(value: object) -> int:
    """Non-negative wei, up to ``2**256 - 1``: ``"1000000000000000000"`` → ``10**18``."""
    if type(value) is str and len(value) < 78 and _UNSIGNED.fullmatch(value):
        return int(value)
    return _parse(value, what="wei", signed=False)


def parse_count(value: object) -> int:
    """A non-negative count (``requestCount``), sent as a JSON integer or integer string."""
    return _parse(value, what="count", signed=False)


_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,77})(?:\.[0-9]{1,78})?", re.ASCII)


def parse_decimal(value: object) -> Decimal:
    """An exact decimal string (``"12.5"``, ``"0.000123"``) to ``Decimal``; no floats."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MoneyParseError(f"decimal must be a decimal string, got {type(value).__name__}")
    if isinstance(value, int):
        return Decimal(_parse(value, what="decimal", signed=True))
    if not _DECIMAL.fullmatch(value):
        raise MoneyParseError(f"decimal must be a plain decimal string, got {len(value)} chars")
    return Decimal(value)


EXACT_MICROS_FRACTION_DIGITS = 12
_EXACT_MICROS = re.compile(r"(0|[1-9][0-9]{0,77})(?:\.([0-9]{1,12}))?", re.ASCII)


def parse_exact_usd_micros(value: object) -> Fraction:
    """``networkFeeUsdExact``: exact USD **micros** to a ``Fraction`` of micros; no floats.

    ``"0"`` → 0, ``"0.932"`` → 932/1000 micros ($0.000000932), ``"29999996.338176"`` →
    29999996338176/10**6 micros (about $30). pymthouse formats the value with
    ``Number.prototype.toFixed(12)``, so at most 12 fraction digits are accepted; it is a
    sum of fees, so no sign. The figure comes from a JS double upstream, so digits past
    ~15 significant figures can be binary noise (``"14305.112999999999"`` for exactly
    14305.113): it is exact *as sent*, and ``networkFeeUsdMicros`` (its ceiling) stays
    the amount to account with. A JSON integer is accepted as whole micros up to
    ``2**53 - 1``; exponents (which ``toFixed`` emits from 1e21), signs, spaces,
    ``"1."``, ``".5"`` and non-ASCII digits are rejected.
    """
    if type(value) is str and len(value) < 78 and _UNSIGNED.fullmatch(value):
        return Fraction(int(value))  # whole micros (the fast path of the grammar below)
    what = "networkFeeUsdExact (USD micros)"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MoneyParseError(f"{what} must be a decimal string, got {type(value).__name__}")
    if isinstance(value, int):
        return Fraction(_parse(value, what=what, signed=False))
    match = _EXACT_MICROS.fullmatch(value)
    if match is None:
        raise MoneyParseError(
            f"{what} must be a plain non-negative decimal string with at most "
            f"{EXACT_MICROS_FRACTION_DIGITS} fraction digits, got {len(value)} chars"
        )
    whole, fraction = match.group(1), match.group(2) or ""
    if int(whole) > MAX_UINT256:
        raise MoneyParseError(f"{what} exceeds 2**256-1")
    return Fraction(int(whole + fraction), 10 ** len(fraction))


_DOLLARS = re.compile(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,6}))?", re.ASCII)
MICROS_PER_USD = 1_000_000
MICROS_PER_CENT = 10_000


def parse_usd_dollars(value: object) -> int:
    """A decimal-dollar string (``"25.00"``, ``"0"``, ``"0.000001"``) to exact USD micros.

    pymthouse's plan ``priceAmount``, auto top-up ``amountUsd`` and invoice totals are
    decimal dollars (pymthouse/pymthouse@5ee7cfc7 ``src/lib/billing/product-dto.ts``,
    ``src/app/api/v1/apps/[id]/billing/wallet/route.ts``). At most 6 fraction digits (a
    micro); no sign, exponent or spaces; a JSON integer is whole dollars up to 2**53-1.
    """
    what = "USD dollars"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MoneyParseError(f"{what} must be a decimal string, got {type(value).__name__}")
    if isinstance(value, int):
        return _parse(value, what=what, signed=False) * MICROS_PER_USD
    match = _DOLLARS.fullmatch(value)
    if match is None:
        raise MoneyParseError(
            f"{what} must be a plain non-negative decimal with at most 6 fraction digits, "
            f"got {len(value)} chars"
        )
    whole, fraction = match.group(1), match.group(2) or ""
    return int(whole) * MICROS_PER_USD + int(fraction.ljust(6, "0"))


def format_usd_cents(usd_micros: int) -> str:
    """Whole-cent USD micros as pymthouse's ``amountUsd`` text: ``25_000_000`` → ``"25.00"``.

    ``ValueError`` for a negative amount or one that is not whole cents (pymthouse's
    ``parseTopUpAmountUsd`` accepts at most 2 decimals).
    """
    if isinstance(usd_micros, bool) or not isinstance(usd_micros, int) or usd_micros < 0:
        raise ValueError("amount must be a non-negative int of USD micros")
    if usd_micros % MICROS_PER_CENT:
        raise ValueError("amount must be whole cents (a multiple of 10,000 USD micros)")
    cents = usd_micros // MICROS_PER_CENT
    return f"{cents // 100}.{cents % 100:02d}"
