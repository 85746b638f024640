"""Helpers shared by the CSV exports (the user's ledger, the staff usage table)."""

from __future__ import annotations


def csv_text(value: str) -> str:
    """Neutralise spreadsheet formulas in free text (CSV injection).

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read
    as a formula by spreadsheets; a leading ``'`` makes it text again. Amounts are plain
    digits and never pass through here.
    """
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
