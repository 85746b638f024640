"""Extension points of the billing app for the apps above it.

billing reads no generation row; the app that owns generations registers, from its
``AppConfig.ready()``, the function that counts a user's images this month
(``inference.apps`` registers ``inference.selectors.generations_counted_this_month``),
and the one that counts a user's images per UTC day (``admitted_images_per_day``), and
the one that tells which generation ids still name an image (``generations_existing``:
the activity links only those; a deleted image's rows keep their text).
Billing's pages and API use it to show an allowance; admission is handed the count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date

#: ``counter(owner_id=…) -> int``: this month's images that count against a limit.
ImagesThisMonthCounter = Callable[..., int]

_counters: list[ImagesThisMonthCounter] = []


def images_this_month_counter_register(counter: ImagesThisMonthCounter) -> None:
    """Register the counter (``ready()`` may run more than once in tests: the last wins)."""
    _counters[:] = [counter]


def images_this_month(*, owner_id: int) -> int:
    """This month's counted images of ``owner_id`` (0 when no app counts images)."""
    return sum(counter(owner_id=owner_id) for counter in _counters)


#: ``counter(owner_id=…, since=date) -> {date: images}``: images admitted per UTC day.
ImagesPerDayCounter = Callable[..., dict[date, int]]

_daily_counters: list[ImagesPerDayCounter] = []


def images_per_day_counter_register(counter: ImagesPerDayCounter) -> None:
    """Register the per-day counter (the last registration wins)."""
    _daily_counters[:] = [counter]


def images_per_day(*, owner_id: int, since: date) -> dict[date, int]:
    """Images admitted per UTC day from ``since`` (empty when no app counts images)."""
    totals: dict[date, int] = {}
    for counter in _daily_counters:
        for day, count in counter(owner_id=owner_id, since=since).items():
            totals[day] = totals.get(day, 0) + count
    return totals


#: ``checker(generation_ids=set[UUID]) -> set[UUID]``: which of them still exist.
GenerationsExistingChecker = Callable[..., set[uuid.UUID]]

_existing_checkers: list[GenerationsExistingChecker] = []


def generations_existing_checker_register(checker: GenerationsExistingChecker) -> None:
    """Register the checker (the last registration wins)."""
    _existing_checkers[:] = [checker]


def generations_existing(*, generation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``generation_ids`` still name a generation (none when no app says)."""
    if not generation_ids:
        return set()
    found: set[uuid.UUID] = set()
    for checker in _existing_checkers:
        found |= checker(generation_ids=generation_ids)
    return found
