"""Dollars: what users pay is exact USD micros converted from the network's wei at a
recorded rate; the hold placed at admission is the most an image can cost."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.models import User
from billing.models import EntryKind, Hold, LedgerEntry, ObservedPrice
from billing.rates import rate_now, rate_observe_metered
from billing.services import max_fee_estimate, price_observe
from billing.services.pricing import price_jump_adopt
from inference.models import Generation
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    grant,
    new_generation,
    usage_settle,
)

pytestmark = pytest.mark.django_db
HOLD = 18_000  # the estimate (5,000,000,000,000 wei) at $3,000/ETH × 6/5
SANDBOX_FEE = 4_768_371_000_000  # the sandbox runners' fixed price per call


def admit(owner: User) -> Generation:
    with transaction.atomic():
        generation = new_generation(owner)
        admit_generation(generation)
    return generation


def test_a_metered_fee_is_never_charged_above_the_hold(usage_user: User) -> None:
    """A manifest reported at 10**24 wei once took a whole balance for one image."""
    grant(usage_user, 5_000_000)
    generation = admit(usage_user)
    assert usage_settle(generation_id=generation.pk, fee_wei=10**24, usage_ref="manifest:huge")
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert (debit.amount_micros, debit.network_fee_wei) == (HOLD, 10**24)
    hold = Hold.objects.get(generation_id=generation.pk)
    # 10**24 wei at $3,000/ETH × 6/5 = $3,600,000,000 = 3.6e15 µ$, all but the hold absorbed
    assert (hold.charged_micros, hold.absorbed_micros) == (HOLD, 3_600_000_000_000_000 - HOLD)
    assert account_of(usage_user).balance_micros == 5_000_000 - HOLD
    assert_ledger_matches(usage_user)


def test_a_payment_above_the_hold_charges_only_the_hold(usage_user: User) -> None:
    grant(usage_user, 5_000_000)
    generation = admit(usage_user)
    charge_at_payment(generation_id=generation.pk, expected_fee_wei=20_722 * SANDBOX_FEE)
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert debit.amount_micros == HOLD
    assert account_of(usage_user).balance_micros == 5_000_000 - HOLD


def test_a_price_spike_is_kept_for_staff_not_adopted_as_every_users_hold() -> None:
    model = "ByteDance/SDXL-Lightning"
    assert price_observe(model_id=model, price_wei=SANDBOX_FEE, units_per_payment=1)
    before = max_fee_estimate(model_id=model)
    assert before == 4_825_591_452_000  # × 1.012, rounded up
    assert not price_observe(model_id=model, price_wei=20_722 * SANDBOX_FEE, units_per_payment=1)
    assert max_fee_estimate(model_id=model) == before  # holds unchanged
    row = ObservedPrice.objects.get(model_id=model)
    assert (row.price_wei, row.jumped_price_wei) == (SANDBOX_FEE, 20_722 * SANDBOX_FEE)
    # A modest rise (within BILLING_PRICE_JUMP_FACTOR = 3) is adopted as before.
    assert price_observe(model_id=model, price_wei=2 * SANDBOX_FEE, units_per_payment=1)
    assert ObservedPrice.objects.get(model_id=model).jumped_price_wei is None
    # Staff may adopt a jump deliberately.
    assert not price_observe(model_id=model, price_wei=100 * SANDBOX_FEE, units_per_payment=1)
    assert price_jump_adopt(model_id=model)
    assert ObservedPrice.objects.get(model_id=model).price_wei == 100 * SANDBOX_FEE


def test_the_hold_records_the_network_ceiling_and_rate(usage_user: User) -> None:
    grant(usage_user, 5_000_000)
    generation = admit(usage_user)
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.amount_micros, hold.max_fee_wei, hold.eth_usd_rate) == (
        HOLD,
        5_000_000_000_000,
        "3000",
    )


def test_an_unknown_outcome_is_charged_at_the_rate_pymthouse_metered_it_at(
    usage_user: User,
) -> None:
    grant(usage_user, 5_000_000)
    generation = admit(usage_user)
    # pymthouse metered 4,768,371,000,000 wei as 14,781.9501 µ$: $3,100/ETH exactly
    exact = Fraction("14781.9501")
    assert usage_settle(
        generation_id=generation.pk,
        fee_wei=SANDBOX_FEE,
        usage_ref="manifest:m",
        usd_micros_exact=exact,
    )
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    # 14,781.9501 × 6/5 = 17,738.34012 → 17,739 µ$
    assert (debit.amount_micros, debit.eth_usd_rate, debit.rate_source) == (
        17_739,
        "3100",
        "metered",
    )


def test_a_fresh_metered_rate_is_used_then_the_configured_one_again(settings) -> None:
    now = timezone.now()
    assert (rate_now(now=now).text, rate_now(now=now).source) == ("3000", "configured")
    rate_observe_metered(
        fee_wei=10**18, usd_micros_exact=Fraction(3_150_250_000), usage_ref="manifest:a",
        observed_at=now,
    )  # fmt: skip
    assert (rate_now(now=now).text, rate_now(now=now).source) == ("3150.25", "metered")
    later = now + timedelta(seconds=settings.BILLING_METERED_RATE_MAX_AGE_SECONDS + 1)
    assert rate_now(now=later).source == "configured"


def test_generate_page_says_the_price_and_refuses_before_the_press(
    usage_user: User, client: Client
) -> None:
    client.force_login(usage_user)
    page = client.get("/generate/").content.decode()
    assert "Up to $0.018 per image" not in page  # ≥ 1 cent: shown to the cent
    assert "<strong data-quote-text>Up to $0.02 per image</strong>" in page
    assert "$0.00 available" in page
    assert 'data-submit disabled aria-describedby="quote-refusal"' in page
    assert "This image costs up to $0.02 and you have $0.00 available." in page
    grant(usage_user, 1_000_000)
    page = client.get("/generate/").content.decode()
    assert 'data-affordable="true"' in page
    assert "$1.00 available" in page
    assert "data-submit disabled" not in page


def test_free_users_see_how_many_images_are_left(make_user, client: Client) -> None:
    user = make_user()
    client.force_login(user)
    page = client.get("/generate/").content.decode()
    assert "<strong data-quote-text>Free · 20 left this month</strong>" in page


def test_models_api_lists_the_price_of_each_model(usage_user: User, client: Client) -> None:
    grant(usage_user, 17_999)  # one micro short of the hold
    client.force_login(usage_user)
    body = client.get("/api/v1/models").json()
    first = body["prices"][0]
    assert (first["price_micros"], first["price"], first["affordable"]) == (
        "18000",
        "Up to $0.02 per image",
        False,
    )
    assert first["refusal_code"] == "insufficient_credit"
    assert body["available_micros"] == "17999"


def test_admission_stores_the_network_ceiling_the_worker_passes_to_the_signer(
    usage_user: User,
) -> None:
    from inference.services import generation_create

    grant(usage_user, 5_000_000)
    generation = generation_create(
        owner=usage_user, prompt="a lighthouse", width=512, height=512, enqueue=False
    )
    assert Generation.objects.get(pk=generation.pk).max_fee_wei == 5_000_000_000_000
    assert Hold.objects.get(generation_id=generation.pk).description == (
        "“a lighthouse” (SDXL-Lightning)"
    )


def test_quotes_for_many_models_cost_the_same_queries_as_one(
    usage_user: User,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.selectors import image_quotes
    from billing.services import account_open

    account = account_open(user_id=usage_user.pk)
    assert account.plan.slug == "pay-as-you-go"  # loaded once, outside the counts
    with CaptureQueriesContext(connection) as one:
        image_quotes(account=account, model_ids=["a/one"])
    models = ["a/one", "b/two", "c/three", "d/four"]
    price_observe(model_id="b/two", price_wei=SANDBOX_FEE, units_per_payment=1)
    with CaptureQueriesContext(connection) as many:
        quotes = image_quotes(account=account, model_ids=models)
    assert len(many) == len(one) == 2  # the rate and the observed prices, once each
    assert [quotes[m].price_micros for m in models] == [18_000, 17_373, 18_000, 18_000]
