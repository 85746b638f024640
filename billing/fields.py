"""Exact integer money columns.

``WeiField`` holds a non-negative integer of up to 78 decimal digits (uint256
wei). On PostgreSQL it is NUMERIC(78,0). SQLite's NUMERIC affinity would turn
values above 2**63 into REAL and silently lose digits, so there it is stored as
text, zero-padded to 78 digits: equal-width digit strings compare and sort as
their numbers do, so ``=``, ``<``, ``ORDER BY``, ``MIN``/``MAX`` and CHECK
constraints between two wei columns are exact on SQLite too. Sums use
``billing.db.WeiSum`` (an exact aggregate registered on each SQLite connection).
Python code always sees ``int``; floats and anything that is not plain ASCII
digits are rejected, never rounded.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from integrations.pymthouse.money import MAX_UINT256
from integrations.pymthouse.money import parse_wei as parse_wei_string

WEI_DIGITS = 78  # len(str(2**256 - 1))


def wei_text(value: int) -> str:
    """The column's text on databases without NUMERIC(78,0): 78 zero-padded digits (for
    bulk writers that prepare rows without a field per value; ``value`` already valid)."""
    return str(value).rjust(WEI_DIGITS, "0")


def parse_wei(value: object) -> int:
    """A wei amount: an ``int`` in ``0 ≤ x < 2**256``, or a canonical digit string.

    Strings follow the same grammar as amounts from pymthouse (ASCII digits only:
    no exponent, separator, sign, space, point or full-width digit; at most 78
    digits), so a value typed by staff is held to the rule upstream data is.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_UINT256:
            raise ValueError("wei amount must be between 0 and 2**256 - 1")
        return value
    return parse_wei_string(value)


class WeiFormField(forms.CharField):
    """Digits only; surrounding spaces are an error too (not silently stripped)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        try:
            return parse_wei(text)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_wei") from exc


_ST = TypeVar("_ST", int, int | None)
_GT = TypeVar("_GT", int, int | None)


class _WeiFieldBase(models.Field[_ST, _GT]):
    description = "Non-negative integer amount in wei (up to 2**256 - 1)"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "postgresql":
            return "numeric(78,0)"
        return "varchar(78)"

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return parse_wei(value)

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        if connection.vendor == "postgresql":
            return value
        return wei_text(value)

    def from_db_value(
        self, value: Any, expression: Any, connection: BaseDatabaseWrapper
    ) -> int | None:
        if value is None:
            return None
        # psycopg returns Decimal for numeric; exact for integers of any size.
        if isinstance(value, str):
            return parse_wei(value.lstrip("0") or "0")
        return int(value)

    def to_python(self, value: Any) -> int | None:
        if value is None:
            return None
        try:
            return parse_wei(value)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_wei") from exc

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": WeiFormField, **kwargs})


class WeiField(_WeiFieldBase[int | None, int | None]):
    """A wei column that may be NULL (``null=True``): typed ``int | None``."""


class WeiAmountField(_WeiFieldBase[int, int]):
    """A NOT NULL wei column: the same storage as ``WeiField``, typed ``int``."""


#: ``SignedAmountField`` holds ``|x| < 10**80`` (a difference of two 78-digit amounts, or
#: of two USD figures derived from them, with room to spare).
SIGNED_DIGITS = 80
SIGNED_MAX = 10**SIGNED_DIGITS - 1


def parse_signed_amount(value: object) -> int:
    """A signed exact integer: an ``int`` with ``|x| ≤ 10**80 - 1``, or its canonical text
    (an optional ``-``, then ASCII digits without leading zeros; ``-0`` is refused)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if (
            not digits
            or not digits.isascii()
            or not digits.isdigit()
            or (len(digits) > 1 and digits[0] == "0")
            or value == "-0"
        ):
            raise ValueError("signed amount must be canonical integer text")
        number = int(value)
    else:
        raise TypeError(f"signed amount must be an int, got {type(value).__name__}")
    if abs(number) > SIGNED_MAX:
        raise ValueError(f"signed amount must have at most {SIGNED_DIGITS} digits")
    return number


class SignedAmountField(models.Field[int, int]):
    """A NOT NULL signed exact integer (a difference of wei or of USD micros).

    NUMERIC(80,0) on PostgreSQL. On SQLite, canonical signed decimal text (``"-42"``): a
    ``DecimalField`` there has NUMERIC affinity and turns values past 2**63 into REAL,
    losing digits. The text is exact but does not order numerically in SQL, so the
    column is for reading and display, not for ``ORDER BY`` or range filters.
    """

    description = "Signed exact integer (up to 80 digits)"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "postgresql":
            return f"numeric({SIGNED_DIGITS},0)"
        return f"varchar({SIGNED_DIGITS + 1})"

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return parse_signed_amount(value)

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or connection.vendor == "postgresql":
            return value
        return str(value)

    def from_db_value(
        self, value: Any, expression: Any, connection: BaseDatabaseWrapper
    ) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_signed_amount(value)
        # psycopg returns Decimal for numeric; exact for integers of any size.
        return int(value)

    def to_python(self, value: Any) -> int | None:
        if value is None:
            return None
        try:
            return parse_signed_amount(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc), code="invalid_signed_amount") from exc
