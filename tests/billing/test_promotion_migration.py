"""billing/0015: the demo seed's credit becomes promotional (no expiry, what its debits
left of it, spent first); every other existing grant stays purchased credit."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import User
from billing.models import Account, PromotionalCredit
from billing.selectors import account_credit_split

BEFORE = [("billing", "0014_account_pending_plan")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.migrate(targets).apps


@pytest.mark.django_db(transaction=True)
def test_demo_credit_becomes_promotional_and_staff_grants_stay_purchased() -> None:
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    plan = old.get_model("billing", "Plan").objects.get(slug="pay-as-you-go")
    entries = old.get_model("billing", "LedgerEntry")
    demo = User.objects.create(email="alice-legacy@example.com")
    staff_granted = User.objects.create(email="paid-by-invoice@example.com")
    accounts = {}
    for user, balance in ((demo, 5_000_000 + 2_000_000 - 3_000_000), (staff_granted, 7_000_000)):
        accounts[user.pk] = old.get_model("billing", "Account").objects.create(
            user_id=user.pk, plan=plan, balance_micros=balance
        )
    rows = [
        # account, kind, effect, amount, balance after, key
        (demo, "grant", "credit", 5_000_000, 5_000_000, f"grant:demo-credit:{demo.pk}"),
        (demo, "grant", "credit", 2_000_000, 7_000_000, "grant:admin:one"),
        (demo, "usage_debit", "debit", 3_000_000, 4_000_000, "usage_debit:x"),
        (staff_granted, "grant", "credit", 7_000_000, 7_000_000, "grant:admin:two"),
    ]
    for user, kind, effect, amount, after, key in rows:
        entries.objects.create(
            account=accounts[user.pk], kind=kind, effect=effect, amount_micros=amount,
            balance_after_micros=after, held_after_micros=0, reason="legacy",
            idempotency_key=key,
        )  # fmt: skip

    _migrate(leaves)

    lot = PromotionalCredit.objects.get()
    assert (lot.account_id, lot.amount_micros, lot.remaining_micros, lot.expires_at) == (
        demo.pk,
        5_000_000,
        2_000_000,  # the $3 charge came out of it first
        None,
    )
    assert lot.entry.idempotency_key == f"grant:demo-credit:{demo.pk}"
    split = account_credit_split(account=Account.objects.get(pk=demo.pk))
    assert (split.promotional_micros, split.purchased_micros) == (2_000_000, 2_000_000)
    split = account_credit_split(account=Account.objects.get(pk=staff_granted.pk))
    assert (split.promotional_micros, split.purchased_micros) == (0, 7_000_000)
    with pytest.raises(Exception, match="append-only"):
        with connection.cursor() as cursor:
            cursor.execute("UPDATE billing_ledgerentry SET reason = 'x'")
