"""The money grammar: exact ints, and a parse error for everything Python's int() forgives."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from integrations.pymthouse.money import (
    MAX_SAFE_JSON_INTEGER,
    MAX_UINT256,
    MoneyParseError,
    parse_count,
    parse_decimal,
    parse_exact_usd_micros,
    parse_signed_usd_micros,
    parse_usd_micros,
    parse_wei,
)

SEVENTY_EIGHT_NINES = "9" * 78


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1", 1),
        ("3500010", 3_500_010),
        ("1000000000000000000000000000000", 10**30),
        ("1000000000000000000000000000001", 10**30 + 1),
        (str(2**256 - 1), 2**256 - 1),
    ],
)
def test_parse_wei_is_exact(text: str, expected: int) -> None:
    parsed = parse_wei(text)
    assert parsed == expected
    assert type(parsed) is int
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "1e30",
        "1E+30",
        "1.5",
        "1.0",
        " 12 ",
        "12 ",
        " 12",
        "12\n",
        "１２３",  # full-width digits: int() accepts them
        "١٢٣",  # Arabic-Indic digits
        "1_000",  # int() accepts underscores
        "+5",
        "-5",
        "-0",
        "007",
        "",
        "0x10",
        "NaN",
        "Infinity",
        "12abc",
        "1" + "0" * 78,  # 79 digits
        "9" * 79,
        str(2**256),  # 78 digits but above the EVM word
        SEVENTY_EIGHT_NINES,
    ],
)
def test_parse_wei_rejects_non_canonical_text(text: str) -> None:
    with pytest.raises(MoneyParseError):
        parse_wei(text)


@pytest.mark.parametrize(
    "value", [1.5, 1e21, 3.0, Decimal("1"), Decimal("1e30"), None, True, False, [], {}]
)
def test_parse_wei_rejects_non_strings_and_non_ints(value: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_wei(value)


def test_json_integers_are_accepted_only_while_exact_in_javascript() -> None:
    assert parse_usd_micros(MAX_SAFE_JSON_INTEGER) == 2**53 - 1
    assert parse_usd_micros(0) == 0
    with pytest.raises(MoneyParseError):
        parse_usd_micros(2**53)
    with pytest.raises(MoneyParseError):
        parse_wei(2**256 - 1)  # as a JSON number it has already been rounded upstream


def test_parse_error_is_a_value_error_and_does_not_echo_the_value() -> None:
    secretish = "1e30" + "x" * 40
    with pytest.raises(ValueError) as excinfo:
        parse_usd_micros(secretish)
    assert secretish not in str(excinfo.value)
    assert "44 chars" in str(excinfo.value)


def test_signed_usd_micros_allow_negative_balances_only_where_asked() -> None:
    assert parse_signed_usd_micros("-120000") == -120_000
    assert parse_signed_usd_micros("0") == 0
    assert parse_signed_usd_micros(-5) == -5
    with pytest.raises(MoneyParseError):
        parse_signed_usd_micros("-0")
    with pytest.raises(MoneyParseError):
        parse_signed_usd_micros("--1")
    with pytest.raises(MoneyParseError):
        parse_usd_micros("-120000")
    with pytest.raises(MoneyParseError):
        parse_usd_micros(-1)


def test_bounds() -> None:
    assert MAX_UINT256 == 2**256 - 1
    assert parse_signed_usd_micros("-" + str(2**256 - 1)) == -(2**256 - 1)
    with pytest.raises(MoneyParseError):
        parse_signed_usd_micros("-" + str(2**256))


def test_parse_count_accepts_json_ints_and_digit_strings() -> None:
    assert parse_count(4) == 4
    assert parse_count("4") == 4
    for bad in (4.0, "4.0", -1, True, None, "1e3"):
        with pytest.raises(MoneyParseError):
            parse_count(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", Decimal(0)), ("12.5", Decimal("12.5")), ("0.000123", Decimal("0.000123")),
     ("0.029999996338176", Decimal("0.029999996338176")), ("-3.25", Decimal("-3.25"))],
)  # fmt: skip
def test_parse_decimal_is_exact(text: str, expected: Decimal) -> None:
    parsed = parse_decimal(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    "value", ["1e3", "1.", ".5", " 1.5", "1,5", "NaN", "１.５", 1.5, None, True]
)
def test_parse_decimal_rejects_floats_and_exponents(value: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_decimal(value)


# networkFeeUsdExact: USD micros with a fraction, as pymthouse formatExactUsdMicros writes
# them (src/lib/openmeter/usage-read.ts; its UI shows "0.932" as $0.000000932).
@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", Fraction(0)), ("0.932", Fraction(932, 1000)), ("932", Fraction(932)),
     ("29999996.338176", Fraction(29_999_996_338_176, 10**6)),
     ("14305.112999999999", Fraction(14_305_112_999_999_999, 10**12)),
     ("0.000000000001", Fraction(1, 10**12)), ("1.50", Fraction(3, 2)),
     (str(MAX_UINT256) + ".5", MAX_UINT256 + Fraction(1, 2)),
     (0, Fraction(0)), (14306, Fraction(14306))],
)  # fmt: skip
def test_parse_exact_usd_micros_is_exact(value: object, expected: Fraction) -> None:
    parsed = parse_exact_usd_micros(value)
    assert parsed == expected
    assert type(parsed) is Fraction


@pytest.mark.parametrize(
    "value",
    ["", "-0.932", "-1", "+1", "1e3", "1E-7", "1e+21", "1.", ".5", " 1.5", "1.5 ", "1,5",
     "1_000", "01", "00.5", "0x10", "NaN", "Infinity", "１.５", "0.0000000000001",
     str(MAX_UINT256 + 1), "9" * 79, -1, MAX_SAFE_JSON_INTEGER + 1, 0.932, Decimal("0.932"),
     None, True, [], {}],
)  # fmt: skip
def test_parse_exact_usd_micros_rejects(value: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_exact_usd_micros(value)
