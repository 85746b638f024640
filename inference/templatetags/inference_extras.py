"""Presentation filters for the inference pages.

Money is formatted with integer arithmetic only: ``cost_usd_micros`` and
``cost_wei`` are exact integers and must never pass through ``float`` (a float
cannot hold most wei amounts, and rounds micros).
"""

from __future__ import annotations

from django import template

from inference.models import GenerationStage

register = template.Library()

MICROS_PER_DOLLAR = 1_000_000


def _exact_integer(value: object) -> int | None:
    """An ``int`` or a string of ASCII digits (optionally signed); anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    return None


@register.filter
def usd_micros(value: object) -> str:
    """12345 → "$0.012345"; 1500000 → "$1.50". Non-integers render as ""."""
    amount = _exact_integer(value)
    if amount is None:
        return ""
    sign = "-" if amount < 0 else ""
    dollars, micros = divmod(abs(amount), MICROS_PER_DOLLAR)
    fraction = f"{micros:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars:,}.{fraction}"


@register.filter
def exact_intcomma(value: object) -> str:
    """An exact integer with thousands separators (1234567 → "1,234,567")."""
    amount = _exact_integer(value)
    if amount is None:
        return ""
    return f"{amount:,}"


@register.filter
def duration(seconds: float | None) -> str:
    """0.42 → "0.4 s"; 12.34 → "12.3 s"; 125 → "2 min 05 s"; None → "—"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{max(seconds, 0):.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@register.filter
def stage_label(stage: str) -> str:
    """The person-facing label of a stored ``Generation.stage`` (GenerationStage)."""
    return GenerationStage.of(stage).label


@register.filter
def model_name(model_id: str) -> str:
    """ "ByteDance/SDXL-Lightning" → "SDXL-Lightning"."""
    return model_id.rsplit("/", 1)[-1]
