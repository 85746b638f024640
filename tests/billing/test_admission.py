"""Admission, holds, settle and release, against the billing services directly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from accounts.models import User
from billing.errors import CreditRefusedError
from billing.models import (
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    ObservedPrice,
    Plan,
)
from billing.services import (
    account_change_plan,
    account_set_suspended,
    generation_hold_release,
    max_fee_estimate,
    price_observe,
    subscription_renew,
)
from inference.models import Generation, GenerationStatus
from inference.services import holds_resolve_stale
from inference.services.transitions import generation_fail
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    grant,
    new_generation,
    usage_settle,
)

ESTIMATE = 5_000_000_000_000  # BILLING_ESTIMATED_FEE_WEI default
# 5,000,000,000,000 wei at $3,000/ETH (BILLING_ETH_USD_RATE) = $0.015 = 15,000 µ$;
# × the pay-as-you-go multiplier 6/5 = 18,000 µ$ ($0.018).
HOLD = 18_000


def admit(owner: User, **kwargs: Any) -> Generation:
    """What generation_create's admission step does: insert, then admit, atomically."""
    with transaction.atomic():
        generation = new_generation(owner, **kwargs)
        admit_generation(generation)
    return generation


@pytest.mark.django_db
def test_usage_plan_holds_the_estimate_and_refuses_past_the_credit(usage_user: User) -> None:
    grant(usage_user, 3 * HOLD + HOLD - 1)  # credit for 3 holds, not 4
    for _ in range(3):
        admit(usage_user)
    with pytest.raises(CreditRefusedError) as refused:
        admit(usage_user)
    assert refused.value.code == "insufficient_credit"
    assert refused.value.status == 402
    assert "out of credit" in refused.value.message
    assert Generation.objects.count() == 3  # the refused row was rolled back
    assert Hold.objects.filter(status=HoldStatus.OPEN).count() == 3
    account = account_of(usage_user)
    assert account.held_micros == 3 * HOLD
    assert account.balance_micros == 4 * HOLD - 1
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD).count() == 3
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_settle_debits_the_real_fee_times_the_multiplier_once(usage_user: User) -> None:
    grant(usage_user, 10**30)
    generation = admit(usage_user)
    fee = 1_250_000_000_001  # 512×512 px at 4,768,371 wei/px would be 1,249,999,967,232
    for _ in range(2):
        charge_at_payment(generation_id=generation.pk, expected_fee_wei=fee)
    # 1,250,000,000,001 wei × $3,000/ETH = 3,750.000000003 µ$; × 6/5 = 4,500.0000000036,
    # rounded up once to a whole micro: 4,501 µ$.
    charge = 4_501
    account = account_of(usage_user)
    assert account.held_micros == 0
    assert account.balance_micros == 10**30 - charge
    debits = LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT)
    assert [(d.amount_micros, d.generation_id) for d in debits] == [(charge, generation.pk)]
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD_RELEASE).count() == 1
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.status, hold.charged_micros) == (HoldStatus.SETTLED, charge)
    # A release arriving after the settle changes nothing.
    generation_hold_release(generation_id=generation.pk, reason="late failure")
    assert account_of(usage_user).balance_micros == 10**30 - charge
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_gateway_backend_charges_the_configured_estimate(usage_user: User) -> None:
    grant(usage_user, HOLD)
    generation = admit(usage_user)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=None)
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (0, 0)
    assert LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT).amount_micros == HOLD


@pytest.mark.django_db
def test_flat_price_plan_charges_the_flat_price(usage_user: User, plans: dict[str, Plan]) -> None:
    account_change_plan(user=usage_user, plan=plans["pay-per-image"], acting_user=None, reason="x")
    flat = 20_000  # $0.02, the seeded pay-per-image price
    grant(usage_user, flat)
    generation = admit(usage_user)
    assert account_of(usage_user).held_micros == flat
    with pytest.raises(CreditRefusedError):
        admit(usage_user)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=10**20)
    assert account_of(usage_user).balance_micros == 0
    assert LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT).amount_micros == flat


@pytest.mark.django_db
def test_a_failed_generation_releases_its_hold_once(usage_user: User) -> None:
    grant(usage_user, HOLD)
    generation = admit(usage_user)
    for _ in range(2):
        generation_hold_release(generation_id=generation.pk, reason="failed before paying")
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (HOLD, 0)
    assert LedgerEntry.objects.filter(kind=EntryKind.HOLD_RELEASE).count() == 1
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).exists()
    admit(usage_user)  # the credit is usable again
    assert account_of(usage_user).held_micros == HOLD


@pytest.mark.django_db
def test_hold_uses_the_observed_price_with_the_max_price_markup(usage_user: User) -> None:
    model = settings.INFERENCE_MODELS[0]
    # A "seconds" runner: 4,768,371 wei per second, a first payment buys 10 seconds.
    price_observe(model_id=model, price_wei=4_768_371, units_per_payment=10)
    # maxPrice per unit = ceil(4,768,371 × 1.012) = 4,825,592 (4,825,591.452 rounded up)
    expected_max = 4_825_592 * 10
    assert max_fee_estimate(model_id=model) == expected_max
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    # 48,255,920 wei × $3,000/ETH = 0.14476776 µ$; × 6/5 = 0.173721312 → 1 µ$ (rounded up)
    assert Hold.objects.get(generation_id=generation.pk).amount_micros == 1
    price_observe(model_id=model, price_wei=7, units_per_payment=1)  # a "fixed" runner
    assert max_fee_estimate(model_id=model) == 8  # ceil(7.084)


@pytest.mark.django_db
def test_settle_remembers_the_runner_price_for_the_next_hold(usage_user: User) -> None:
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    Generation.objects.filter(pk=generation.pk).update(
        price_wei=4_768_371_000_000, price_unit="fixed", units_paid=1,
        expected_fee_wei=4_768_371_000_000,
    )  # fmt: skip
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=4_768_371_000_000)
    model = settings.INFERENCE_MODELS[0]
    # ceil(4,768,371,000,000 × 1.012) = 4,825,591,452,000
    assert max_fee_estimate(model_id=model) == 4_825_591_452_000


@pytest.mark.django_db
def test_holds_and_settlement_work_while_the_cache_is_down(usage_user: User) -> None:
    """The observed price is a database row: a cache outage (a Redis restart) fails
    neither an admission nor a payment's settlement."""
    unreachable = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    grant(usage_user, 10**20)
    with override_settings(CACHES=unreachable):
        first = admit(usage_user)
        assert Hold.objects.get(generation_id=first.pk).amount_micros == HOLD  # the estimate
        Generation.objects.filter(pk=first.pk).update(
            price_wei=7, price_unit="fixed", units_paid=1, expected_fee_wei=7
        )
        charge_at_payment(generation_id=first.pk, expected_fee_wei=7)
        second = admit(usage_user)
    # ceil(7 × 1.012) = 8 wei = 0.000000024 µ$, × 6/5, rounded up to a whole micro: 1 µ$
    assert Hold.objects.get(generation_id=second.pk).max_fee_wei == 8
    assert Hold.objects.get(generation_id=second.pk).amount_micros == 1
    assert ObservedPrice.objects.get().price_wei == 7
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_free_plan_counts_the_monthly_allowance(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()  # default plan: free, 20 a month
    Plan.objects.filter(slug="free").update(monthly_generation_allowance=2)
    first = admit(user)
    admit(user)
    with pytest.raises(CreditRefusedError) as refused:
        admit(user)
    assert refused.value.code == "allowance_used"
    # A generation that failed before paying does not count (the transition says so).
    assert generation_fail(generation_id=first.pk, code="upstream_unavailable")
    admit(user)
    assert not Hold.objects.exists()
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_subscription_must_be_active_and_respects_its_cap(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    account_change_plan(user=user, plan=plans["studio"], acting_user=None, reason="sub")
    with pytest.raises(CreditRefusedError) as refused:
        admit(user)
    assert refused.value.code == "subscription_inactive"
    now = timezone.now()
    subscription_renew(
        user=user, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=29),
        acting_user=None,
    )  # fmt: skip
    Plan.objects.filter(slug="studio").update(monthly_generation_cap=1)
    admit(user)
    with pytest.raises(CreditRefusedError) as refused:
        admit(user)
    assert refused.value.code == "monthly_cap_reached"
    assert Generation.objects.count() == 1


@pytest.mark.django_db
def test_suspended_accounts_are_refused(usage_user: User) -> None:
    grant(usage_user, 10**20)
    account_set_suspended(user=usage_user, suspended=True, reason="chargeback", acting_user=None)
    with pytest.raises(CreditRefusedError) as refused:
        admit(usage_user)
    assert refused.value.code == "account_suspended"
    assert account_of(usage_user).held_micros == 0


@pytest.mark.django_db
def test_outcome_unknown_keeps_its_hold_until_the_mirror_shows_the_manifest(
    usage_user: User,
) -> None:
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.FAILED, error_code="outcome_unknown",
        payment_claimed_at=timezone.now(), manifest_id="m-1",
    )  # fmt: skip
    Hold.objects.filter(pk=Hold.objects.get().pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    assert holds_resolve_stale() == []  # before the timeout: kept
    assert account_of(usage_user).held_micros == HOLD
    fee = 4_768_371_000_000
    assert usage_settle(generation_id=generation.pk, fee_wei=fee, usage_ref="manifest:m-1")
    assert not usage_settle(generation_id=generation.pk, fee_wei=fee, usage_ref="manifest:m-1")
    # 4,768,371,000,000 wei × $3,000/ETH = 14,305.113 µ$; × 6/5 = 17,166.1356 → 17,167 µ$
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (10**20 - 17_167, 0)
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert (debit.amount_micros, debit.usage_ref) == (17_167, "manifest:m-1")
    assert (debit.network_fee_wei, debit.eth_usd_rate, debit.rate_source) == (
        fee,
        "3000",
        "configured",
    )
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_stale_holds_are_settled_released_or_timed_out_and_reported(
    usage_user: User, settings, caplog: pytest.LogCaptureFixture
) -> None:
    grant(usage_user, 10**20)
    succeeded, unpaid, unknown, running = (admit(usage_user) for _ in range(4))
    Generation.objects.filter(pk=succeeded.pk).update(
        status=GenerationStatus.SUCCEEDED, payment_claimed_at=timezone.now(), expected_fee_wei=10
    )
    Generation.objects.filter(pk=unpaid.pk).update(status=GenerationStatus.FAILED)
    Generation.objects.filter(pk=unknown.pk).update(
        status=GenerationStatus.FAILED, error_code="outcome_unknown",
        payment_claimed_at=timezone.now(),
    )  # fmt: skip
    Hold.objects.update(created_at=timezone.now() - timedelta(days=2))
    report = {r.generation_id: r.action for r in holds_resolve_stale()}
    assert report == {
        str(succeeded.pk): "settled",
        str(unpaid.pk): "released",
        str(unknown.pk): "timed_out",
        str(running.pk): "timed_out",
    }
    assert "stale hold" in caplog.text
    account = account_of(usage_user)
    # 10 wei × $3,000/ETH × 6/5 = 0.000000036 µ$, rounded up: 1 µ$
    assert (account.balance_micros, account.held_micros) == (10**20 - 1, 0)
    assert holds_resolve_stale() == []
    # The manifest shows up after the timeout: the charge is still taken, once, and never
    # more than the hold it had (18,000 µ$): 4,768,371,000,000 wei → 17,167 µ$.
    assert usage_settle(generation_id=unknown.pk, fee_wei=4_768_371_000_000, usage_ref="manifest:x")
    assert account_of(usage_user).balance_micros == 10**20 - 1 - 17_167
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_young_holds_are_left_alone(usage_user: User) -> None:
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    Generation.objects.filter(pk=generation.pk).update(status=GenerationStatus.FAILED)
    assert holds_resolve_stale() == []
    assert Hold.objects.get().status == HoldStatus.OPEN


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submissions_with_credit_for_three_admit_exactly_three(
    usage_user: User,
) -> None:
    grant(usage_user, 3 * HOLD + HOLD - 1)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait()
            admit(usage_user)
            result = "admitted"
        except CreditRefusedError:
            result = "refused"
        except Exception as exc:
            result = f"error: {exc!r}"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["admitted"] * 3 + ["refused"] * 17
    assert Generation.objects.count() == 3
    assert Hold.objects.count() == 3
    account = account_of(usage_user)
    assert account.held_micros == 3 * HOLD
    assert account.balance_micros - account.held_micros == HOLD - 1
    assert_ledger_matches(usage_user)


@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_deducts_and_holds_lose_no_update(usage_user: User) -> None:
    from billing.services import credit_deduct, credit_grant

    grant(usage_user, 10**30)
    barrier = threading.Barrier(12)
    errors: list[str] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            if index % 3 == 0:
                credit_grant(user=usage_user, amount_micros=10**27 + index, reason="top-up",
                             acting_user=None, idempotency_key=f"g{index}")  # fmt: skip
            elif index % 3 == 1:
                credit_deduct(user=usage_user, amount_micros=10**26 + index, reason="fix",
                              acting_user=None, idempotency_key=f"d{index}")  # fmt: skip
            else:
                admit(usage_user)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    granted = sum(10**27 + i for i in range(12) if i % 3 == 0)
    deducted = sum(10**26 + i for i in range(12) if i % 3 == 1)
    account = account_of(usage_user)
    assert account.balance_micros == 10**30 + granted - deducted
    assert account.held_micros == 4 * HOLD
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_the_periodic_task_resolves_and_counts_stale_holds(usage_user: User) -> None:
    from inference.tasks import holds_resolve_stale_task

    schedule = settings.PERIODIC_JOBS["billing-resolve-stale-holds"]
    assert schedule["task"] == holds_resolve_stale_task.name
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    Generation.objects.filter(pk=generation.pk).update(status=GenerationStatus.CANCELED)
    Hold.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert holds_resolve_stale_task.delay().get() == 1
    assert holds_resolve_stale_task.delay().get() == 0
    assert account_of(usage_user).held_micros == 0


@pytest.mark.django_db
def test_an_image_is_charged_at_the_plan_that_admitted_it(
    usage_user: User, plans: dict[str, Plan]
) -> None:
    grant(usage_user, 10**20)
    generation = admit(usage_user)
    account_change_plan(user=usage_user, plan=plans["free"], acting_user=None, reason="downgrade")
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=4_768_371_000_000)
    assert LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT).amount_micros == 17_167
    account = account_of(usage_user)
    assert (account.balance_micros, account.held_micros) == (10**20 - 17_167, 0)


@pytest.mark.django_db
def test_a_crowd_of_unresolvable_holds_does_not_starve_a_settleable_one(
    usage_user: User,
) -> None:
    """1,000 older holds waiting for the mirror fill a run; the next run reaches the rest."""
    grant(usage_user, 10**20)
    account = account_of(usage_user)
    now = timezone.now()
    waiting = Generation.objects.bulk_create(
        Generation(
            owner=usage_user,
            prompt="p",
            model_id=settings.INFERENCE_MODELS[0],
            width=512,
            height=512,
            status=GenerationStatus.RUNNING,
            payment_claimed_at=now,
        )  # fmt: skip
        for _ in range(1000)
    )
    Hold.objects.bulk_create(
        Hold(generation_id=g.pk, account=account, amount_micros=1, status=HoldStatus.OPEN)
        for g in waiting
    )
    Hold.objects.update(created_at=now - timedelta(hours=2))
    settleable = admit(usage_user)
    Generation.objects.filter(pk=settleable.pk).update(
        status=GenerationStatus.SUCCEEDED, payment_claimed_at=now, expected_fee_wei=10
    )
    Hold.objects.filter(generation_id=settleable.pk).update(created_at=now - timedelta(hours=1))

    with override_settings(BILLING_STALE_HOLD_SWEEP_LIMIT=1000):
        assert holds_resolve_stale(now=now) == []  # the run looked at the 1,000 waiting ones
        second = holds_resolve_stale(now=now + timedelta(minutes=5))
    assert [(r.generation_id, r.action) for r in second] == [(str(settleable.pk), "settled")]
    assert Hold.objects.get(generation_id=settleable.pk).status == HoldStatus.SETTLED
    assert Hold.objects.filter(status=HoldStatus.OPEN).count() == 1000
    assert account_of(usage_user).balance_micros == 10**20 - 1  # 10 wei → 1 µ$ (rounded up)
