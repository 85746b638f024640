"""Row locks for read-modify-write of billing accounts (house style R5)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from billing.models import Account


def _locking() -> QuerySet[Account]:
    # Only the account row (``of=("self",)``): locking the joined plan row too would
    # serialise every user on that plan. NO KEY UPDATE leaves foreign-key checks of
    # rows that reference the account (ledger entries, holds) unblocked.
    return Account.objects.select_for_update(of=("self",), no_key=True).select_related("plan")


def account_lock(*, user_id: int) -> Account:
    """The user's account, locked for this transaction; opened on the default plan if new.

    Must run inside ``transaction.atomic``. On PostgreSQL this is ``SELECT … FOR
    UPDATE``; on SQLite every write transaction already holds the database's write
    lock (``transaction_mode=IMMEDIATE``), which serialises the same sections.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("account_lock must be called inside transaction.atomic")
    account = _locking().filter(pk=user_id).first()
    if account is None:
        from billing.services.accounts import account_open

        account_open(user_id=user_id)
        account = _locking().get(pk=user_id)
    return account
