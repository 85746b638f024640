"""billing/0012 converts an existing wei ledger to USD micros in place, at the configured
rate, rounded down, keeping every ledger invariant exact."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import User
from billing.models import Account, Hold, LedgerEntry, Plan
from billing.selectors import account_ledger_totals

BEFORE = [("billing", "0011_hold_sweep_order")]
ETH = 10**18


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor.migrate(targets).apps


def _entry(model: Any, account: Any, n: int, kind: str, effect: str, amount: int,
           balance: int, held: int) -> None:  # fmt: skip
    model.objects.create(
        account=account, kind=kind, effect=effect, amount_wei=amount, balance_after_wei=balance,
        held_after_wei=held, reason=f"entry {n}", idempotency_key=f"k{n}",
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_wei_balances_convert_at_the_configured_rate_and_the_ledger_still_adds_up(
    settings: Any,
) -> None:
    settings.BILLING_ETH_USD_RATE = "3000"
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    user = User.objects.create(email="legacy@example.com")
    plan = old.get_model("billing", "Plan").objects.get(slug="pay-as-you-go")
    account = old.get_model("billing", "Account").objects.create(
        user_id=user.pk, plan=plan, balance_wei=ETH + 1, held_wei=ETH // 3
    )
    entries = old.get_model("billing", "LedgerEntry")
    # 1.5 wei-of-a-micro steps: converted one by one they would not add up to the total.
    _entry(entries, account, 1, "grant", "credit", ETH // 2, ETH // 2, 0)
    _entry(entries, account, 2, "grant", "credit", ETH // 2 + 1, ETH + 1, 0)
    _entry(entries, account, 3, "hold", "hold", ETH // 3, ETH + 1, ETH // 3)
    old.get_model("billing", "Hold").objects.create(
        generation_id=uuid.uuid4(), account=account, plan=plan, amount_wei=ETH // 3
    )
    old.get_model("billing", "Plan").objects.filter(slug="pay-per-image").update(
        flat_price_wei=2 * 10**12
    )

    _migrate(leaves)

    migrated = Account.objects.get(pk=user.pk)
    # 1 ETH + 1 wei at $3,000 = $3,000.000000000000003 → 3,000,000,000 µ$ (rounded down)
    assert (migrated.balance_micros, migrated.held_micros) == (3_000_000_000, 999_999_999)
    amounts = list(LedgerEntry.objects.order_by("id").values_list("amount_micros", flat=True))
    assert amounts == [1_500_000_000, 1_500_000_000, 999_999_999]  # ⌊999,999,999.999…⌋
    totals = account_ledger_totals(account=migrated)
    assert (totals.balance_micros, totals.held_micros) == (3_000_000_000, 999_999_999)
    assert Hold.objects.get().amount_micros == 999_999_999  # open holds add up to held
    assert Plan.objects.get(slug="pay-per-image").flat_price_micros == 6_000  # $0.006
    # and the ledger is still append-only afterwards
    with pytest.raises(Exception, match="append-only"):
        with connection.cursor() as cursor:
            cursor.execute("UPDATE billing_ledgerentry SET reason = 'x'")
