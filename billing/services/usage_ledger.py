"""The two places the usage mirror touches the ledger (built on branch ``issue8-ledger``).

Kept in one small module so that wiring them to the ledger is a change here only:

- ``local_usage_debits``: per (externalUserId, UTC day), the wei our ledger debited for
  usage, for the drift report. It reads the ledger's entry model when it is installed
  (``billing.LedgerEntry`` with a usage-debit kind); without a ledger it reports nothing.
- ``settle_from_usage``: a newly mirrored manifest row joined to a generation calls
  ``billing.services.generation_usage_settle(generation_id=, fee_wei=, usage_ref=)``,
  which settles a hold an ``outcome_unknown`` generation kept (and is a no-op otherwise;
  ``usage_ref`` is its idempotency key).
"""

from __future__ import annotations

import importlib
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

from django.apps import apps

logger = logging.getLogger(__name__)

#: Ledger entry kinds that are a usage debit (the names the ledger branch uses).
USAGE_DEBIT_KINDS = ("usage_debit",)


def local_usage_debits(*, user_ids: dict[str, int] | None, since: date) -> dict[tuple[str, date], int]:
    """``{(externalUserId, day): wei}`` of usage debits since ``since`` (exact integers)."""
    try:
        entry_model: Any = apps.get_model("billing", "LedgerEntry")
    except LookupError:
        return {}
    entries = entry_model.objects.filter(kind__in=USAGE_DEBIT_KINDS, created_at__date__gte=since)
    if user_ids is not None:
        if not user_ids:
            return {}
        entries = entries.filter(account__user_id__in=list(user_ids.values()))
    totals: dict[tuple[str, date], int] = defaultdict(int)
    for ext, created_at, amount in entries.values_list(
        "account__user__external_user_id", "created_at", "amount_wei"
    ).iterator(chunk_size=10_000):
        totals[(ext, created_at.date())] += abs(int(amount))
    return dict(totals)


def _settle_hook() -> Callable[..., Any] | None:
    try:
        services = importlib.import_module("billing.services")
    except ImportError:  # pragma: no cover - the package is ours
        return None
    hook: Callable[..., Any] | None = getattr(services, "generation_usage_settle", None)
    return hook


def settle_from_usage(*, generation_id: object, fee_wei: int, usage_ref: str) -> bool:
    """Call the ledger's ``generation_usage_settle``; False when the ledger is not wired."""
    hook = _settle_hook()
    if hook is None:
        logger.debug("generation_usage_settle is not installed; %s not settled", generation_id)
        return False
    result = hook(generation_id=generation_id, fee_wei=fee_wei, usage_ref=usage_ref)
    return result is not False
