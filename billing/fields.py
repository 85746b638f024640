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
        return str(value).rjust(WEI_DIGITS, "0")

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
