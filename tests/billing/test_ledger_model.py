"""Hypothesis stateful test: random grants, deducts, replays, holds, settles and releases
against the real services, checked after every step against an in-memory model."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from accounts.models import User
from billing.errors import AmountOutOfRangeError, CreditRefusedError, InsufficientFundsError
from billing.models import Account, Plan
from billing.selectors import account_ledger_totals
from billing.services import (
    account_change_plan,
    credit_deduct,
    credit_grant,
    generation_hold_release,
)
from tests.billing.conftest import (
    admit_generation,
    charge_at_payment,
    charge_micros,
    new_generation,
    usage_settle,
)

MAX = 2**256 - 1
HOLD = 18_000  # the estimate, 5,000,000,000,000 wei at $3,000/ETH, × 6/5 in USD micros
amounts = st.one_of(st.integers(0, 10**14), st.integers(0, MAX), st.sampled_from([0, 1, HOLD, MAX]))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.prefix = uuid.uuid4().hex
        self.user = User.objects.create(email=f"h-{self.prefix}@example.com")
        account_change_plan(
            user=self.user, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None,
            reason="model",
        )  # fmt: skip
        self.balance = 0
        self.open: dict[uuid.UUID, int] = {}
        self.settled: list[uuid.UUID] = []
        self.released: list[uuid.UUID] = []
        self.grants: list[tuple[str, int]] = []
        self.refused_keys: list[tuple[str, int]] = []

    @property
    def available(self) -> int:
        return self.balance - sum(self.open.values())

    @rule(amount=amounts)
    def grant(self, amount: int) -> None:
        key = f"{self.prefix}-g{len(self.grants)}"
        if self.balance + amount > MAX:
            with pytest.raises(AmountOutOfRangeError):
                credit_grant(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                             idempotency_key=key)  # fmt: skip
            return
        credit_grant(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                     idempotency_key=key)  # fmt: skip
        self.balance += amount
        self.grants.append((key, amount))

    @rule(data=st.data())
    def replay_grant(self, data: Any) -> None:
        if not self.grants:
            return
        key, amount = data.draw(st.sampled_from(self.grants))
        credit_grant(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                     idempotency_key=key)  # fmt: skip

    @rule(amount=amounts)
    def deduct(self, amount: int) -> None:
        key = f"{self.prefix}-d{uuid.uuid4().hex}"
        if amount > self.available:
            with pytest.raises(InsufficientFundsError):
                credit_deduct(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                              idempotency_key=key)  # fmt: skip
            self.refused_keys.append((key, amount))
            return
        credit_deduct(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                      idempotency_key=key)  # fmt: skip
        self.balance -= amount

    @rule(data=st.data())
    def retry_refused_deduct(self, data: Any) -> None:
        if not self.refused_keys:
            return
        key, amount = data.draw(st.sampled_from(self.refused_keys))
        with pytest.raises(InsufficientFundsError):
            credit_deduct(user=self.user, amount_micros=amount, reason="m", acting_user=None,
                          idempotency_key=key)  # fmt: skip

    @rule()
    def admit(self) -> None:
        try:
            with transaction.atomic():
                generation = new_generation(self.user)
                admit_generation(generation)
        except CreditRefusedError:
            assert self.available < HOLD
            return
        assert self.available >= HOLD
        self.open[generation.pk] = HOLD

    @rule(data=st.data(), fee=st.integers(0, 10**40), metered=st.booleans())
    def settle(self, data: Any, fee: int, metered: bool) -> None:
        if not self.open:
            return
        gid = data.draw(st.sampled_from(sorted(self.open)))
        if metered:
            usage_settle(generation_id=gid, fee_wei=fee, usage_ref=f"manifest:{gid}")
        else:
            charge_at_payment(generation_id=gid, expected_fee_wei=fee)
        self.open.pop(gid)
        charge = min(charge_micros(fee), HOLD)  # never more than the hold
        self.balance -= min(charge, self.available)
        self.settled.append(gid)

    @rule(data=st.data())
    def release(self, data: Any) -> None:
        if not self.open:
            return
        gid = data.draw(st.sampled_from(sorted(self.open)))
        generation_hold_release(generation_id=gid, reason="failed")
        self.open.pop(gid)
        self.released.append(gid)

    @rule(data=st.data(), fee=st.integers(0, 10**20))
    def replay_settled(self, data: Any, fee: int) -> None:
        """Hooks run again (redelivery): a settled image is never charged twice."""
        if not self.settled:
            return
        gid = data.draw(st.sampled_from(self.settled))
        generation_hold_release(generation_id=gid, reason="again")
        charge_at_payment(generation_id=gid, expected_fee_wei=fee)
        usage_settle(generation_id=gid, fee_wei=fee, usage_ref="again")

    @rule(data=st.data(), fee=st.integers(0, 10**20))
    def late_charge_after_release(self, data: Any, fee: int) -> None:
        """The fee of a released image shows up later (metered usage after the timeout):
        it is charged once, from what is available, never from other images' holds."""
        if not self.released:
            return
        gid = data.draw(st.sampled_from(self.released))
        usage_settle(generation_id=gid, fee_wei=fee, usage_ref=f"manifest:{gid}")
        generation_hold_release(generation_id=gid, reason="again")
        self.released.remove(gid)
        self.settled.append(gid)
        self.balance -= min(charge_micros(fee), HOLD, self.available)

    @invariant()
    def matches_the_model_and_the_ledger(self) -> None:
        account = Account.objects.get(pk=self.user.pk)
        assert account.balance_micros == self.balance
        assert account.held_micros == sum(self.open.values())
        assert account.balance_micros >= account.held_micros
        totals = account_ledger_totals(account=account)
        assert (totals.balance_micros, totals.held_micros) == (
            account.balance_micros,
            account.held_micros,
        )


@pytest.mark.django_db
def test_ledger_matches_its_model_under_random_operations(plans: dict[str, Plan]) -> None:
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
