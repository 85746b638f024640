"""Exact integer money columns.

``WeiField`` holds a non-negative integer of up to 78 decimal digits (uint256
wei). On PostgreSQL it is NUMERIC(78,0). SQLite's NUMERIC affinity would turn
values above 2**63 into REAL and silently lose digits, so there it is stored as
text. Python code always sees ``int``; floats and anything that is not plain
ASCII digits are rejected, never rounded.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

UINT256_MAX = 2**256 - 1
_DIGITS_RE = re.compile(r"[0-9]{1,78}")


def parse_wei(value: object) -> int:
    """Parse a wei amount: an ``int`` or a string of ASCII digits, 0 ≤ x < 2**256.

    Rejects floats, exponents (``"1e30"``), separators (``"1_000"``), signs,
    non-ASCII digits (``"１２３"``), blanks and values over 78 digits.
    """
    if isinstance(value, bool):
        raise ValueError("wei amount must be an integer, not a boolean")  # noqa: TRY004
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not _DIGITS_RE.fullmatch(value):
            raise ValueError(f"wei amount must be plain ASCII digits, got {value!r}")
        number = int(value)
    else:
        raise ValueError(  # noqa: TRY004  (one error type for every bad amount)
            f"wei amount must be an integer or digit string, got {type(value).__name__}"
        )
    if not 0 <= number <= UINT256_MAX:
        raise ValueError("wei amount must be between 0 and 2**256 - 1")
    return number


class WeiFormField(forms.CharField):
    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        try:
            return parse_wei(text)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_wei") from exc


class WeiField(models.Field[int | None, int | None]):
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
        return str(value)

    def from_db_value(
        self, value: Any, expression: Any, connection: BaseDatabaseWrapper
    ) -> int | None:
        if value is None:
            return None
        # psycopg returns Decimal for numeric; exact for integers of any size.
        return int(value) if not isinstance(value, str) else parse_wei(value)

    def to_python(self, value: Any) -> int | None:
        if value is None:
            return None
        try:
            return parse_wei(value)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid_wei") from exc

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": WeiFormField, **kwargs})
