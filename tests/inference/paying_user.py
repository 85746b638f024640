"""A user whose generations take a credit hold at admission, for end-to-end money checks."""

from __future__ import annotations

from accounts.models import User
from billing.models import EntryKind, LedgerEntry
from billing.services import account_change_plan, plans_seed
from tests.billing.conftest import grant
from tests.factories import UserFactory

CREDIT = 5_000_000  # $5.00 granted up front (USD micros)
HOLD_MICROS = 18_000  # the 5e12 wei fee estimate at $3,000/ETH × 6/5, while no price was seen


def pay_as_you_go_user(**fields: object) -> User:
    user: User = UserFactory(**fields)
    plan = next(plan for plan in plans_seed() if plan.slug == "pay-as-you-go")
    account_change_plan(user=user, plan=plan, acting_user=None, reason="test setup")
    grant(user, CREDIT, key=f"e2e-credit-{user.pk}")
    return user


def ledger_kinds(user: User) -> list[str]:
    """The user's ledger entry kinds, oldest first."""
    return list(
        LedgerEntry.objects.filter(account_id=user.pk).order_by("pk").values_list("kind", flat=True)
    )


__all__ = ["CREDIT", "HOLD_MICROS", "EntryKind", "ledger_kinds", "pay_as_you_go_user"]
