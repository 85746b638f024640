"""A hard ceiling per image (``max_fee_wei``) on the live-runner backend, over real HTTP.

A runner whose expected fee is above the ceiling is never paid: another runner within
it is used, and with none, :class:`PriceExceededError` is raised before anything is
claimed or sent to the signer. The ``maxPrice`` the signer gets never lets it pay more
per unit than the ceiling allows, so a price that rises after our check is refused by
the (go-livepeer-strict) sandbox signer with 481 instead of paid.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from integrations.livepeer import (
    LivepeerPriceExceededError,
    LivepeerUnavailableError,
    PriceExceededError,
    SignerCredentials,
    get_backend,
)
from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.live_runner.payment import TicketBuyer
from integrations.livepeer.live_runner.pricing import pricing_for_unit
from integrations.livepeer.live_runner.selection import Runner
from integrations.livepeer.schemas import PaymentChallenge
from integrations.livepeer.session import LivepeerSession
from integrations.livepeer.signer import SignerClient
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    DEFAULT_PRICE_WEI,
    PAYMENT_PATH,
    RUNNER_1,
    RUNNER_1_ID,
    RUNNER_2,
    SIGNER_INFO_PATH,
    RecordingGuard,
    calls,
    calls_under,
    generate,
    generate_error,
    image_request,
    set_runner,
    set_runners,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

#: ceil(DEFAULT_PRICE_WEI × 1.012), the maxPrice without a ceiling (default markup).
MARKED_UP_PRICE_WEI = 4_825_591_452_000


def max_prices(sandbox: SandboxControl) -> list[Any]:
    """The ``maxPrice`` of every payment request the sandbox signer handled."""
    return [record.get("maxPrice") for record in calls(sandbox, PAYMENT_PATH)]


def assert_nothing_paid(sandbox: SandboxControl, guard: RecordingGuard) -> None:
    assert guard.calls == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []


# --- (a) no runner within the ceiling ------------------------------------------------


def test_runner_above_the_ceiling_is_never_claimed_nor_paid(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    ceiling = DEFAULT_PRICE_WEI - 1  # both runners' fee is DEFAULT_PRICE_WEI

    request, error = generate_error(
        signer_credentials, guard, PriceExceededError, max_fee_wei=ceiling
    )

    assert isinstance(error, LivepeerPriceExceededError)  # handled like a signer 481
    assert error.code == "price_exceeded"
    assert error.retryable is False
    assert error.status is None
    assert error.request_id == request.request_id
    assert "the network price rose above what this image was admitted at" in str(error)
    assert f"ceiling {ceiling} wei" in str(error)
    assert f"lowest runner fee {DEFAULT_PRICE_WEI} wei" in str(error)
    assert_nothing_paid(sandbox, guard)
    assert calls_under(sandbox, "/apps/") == []  # not even an unpaid challenge
    assert calls(sandbox, SIGNER_INFO_PATH) == []


def test_seconds_runner_is_judged_by_the_fee_of_its_ten_seconds_not_its_unit_price(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runners(sandbox, unit="seconds", price="1000000007")  # fee 10_000_000_070

    _, error = generate_error(
        signer_credentials, guard, PriceExceededError, max_fee_wei=10_000_000_069
    )

    assert "lowest runner fee 10000000070 wei" in str(error)
    assert_nothing_paid(sandbox, guard)


def test_zero_ceiling_pays_nothing(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    generate_error(signer_credentials, guard, PriceExceededError, max_fee_wei=0)

    assert_nothing_paid(sandbox, guard)


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (True, TypeError), (1.5, TypeError), ("9", TypeError)]
)
def test_an_invalid_ceiling_is_refused_before_anything_is_sent(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    value: Any,
    error: type[Exception],
) -> None:
    with pytest.raises(error, match="max_fee_wei"):
        get_backend("live-runner").generate(
            image_request(), credentials=signer_credentials, guard=guard, max_fee_wei=value
        )

    assert_nothing_paid(sandbox, guard)
    assert sandbox.requests() == []


# --- (b) another runner within the ceiling ---------------------------------------------


def test_a_runner_within_the_ceiling_is_paid_instead_of_the_first_one(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, price=str(DEFAULT_PRICE_WEI * 2))  # first, too dear
    ceiling = DEFAULT_PRICE_WEI  # runner 2's fee exactly: within (not above) the ceiling

    _, result = generate(signer_credentials, guard, max_fee_wei=ceiling)

    assert png_size(result.images[0].content) == (640, 384)
    assert result.runner_url == f"{sandbox.url}{RUNNER_2}"
    assert result.tickets_paid == 1
    assert guard.calls == ["claim", "confirm"]
    [record] = guard.records
    assert record.runner_url == result.runner_url
    assert record.expected_fee_wei == DEFAULT_PRICE_WEI
    assert [event["feeWei"] for event in sandbox.events()] == [str(DEFAULT_PRICE_WEI)]
    assert calls(sandbox, RUNNER_1) == []  # the dear runner is not even challenged
    assert [r["status"] for r in calls(sandbox, RUNNER_2)] == [402, 200]
    # (c) the ceiling, not the markup, sets maxPrice: ≤ ceiling / units (1 for fixed).
    assert max_prices(sandbox) == [
        {"price": str(DEFAULT_PRICE_WEI), "currency": "wei", "unit": "fixed"}
    ]


def test_when_every_runner_within_the_ceiling_fails_before_payment_it_is_retryable(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, price=str(DEFAULT_PRICE_WEI * 2))
    sandbox.add_fault("POST", RUNNER_2, status=503, body="busy", times=1)

    _, error = generate_error(
        signer_credentials, guard, LivepeerUnavailableError, max_fee_wei=DEFAULT_PRICE_WEI
    )

    assert error.retryable is True
    assert f"{RUNNER_1}: fee above this image's ceiling" in str(error)
    assert f"{RUNNER_2}: HTTP 503" in str(error)
    assert_nothing_paid(sandbox, guard)
    assert calls(sandbox, RUNNER_1) == []


# --- (c) the maxPrice sent never exceeds the ceiling per unit ------------------------


def test_max_price_per_unit_is_the_ceiling_divided_by_the_units_paid(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    # seconds: a first payment buys 10 units. Markup alone would allow
    # ceil(1_000_000_007 × 1.012) = 1_012_000_008 per second; the ceiling allows
    # 10_000_500_009 // 10 = 1_000_050_000 (floored: 10 × 1_000_050_000 <= ceiling).
    set_runners(sandbox, unit="seconds", price="1000000007")
    ceiling = 10_000_500_009

    _, result = generate(signer_credentials, guard, max_fee_wei=ceiling)

    [max_price] = max_prices(sandbox)
    assert max_price == {"price": "1000050000", "currency": "wei", "unit": "seconds"}
    assert int(max_price["price"]) * 10 <= ceiling
    assert guard.records[0].expected_fee_wei == 10_000_000_070
    assert [event["feeWei"] for event in sandbox.events()] == ["10000000070"]
    assert result.tickets_paid == 1


def test_a_ceiling_above_the_marked_up_price_leaves_max_price_at_the_markup(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    _, result = generate(signer_credentials, guard, max_fee_wei=DEFAULT_PRICE_WEI * 10)

    assert max_prices(sandbox) == [
        {"price": str(MARKED_UP_PRICE_WEI), "currency": "wei", "unit": "fixed"}
    ]
    assert result.tickets_paid == 1


def test_a_price_that_rises_after_the_check_is_refused_by_the_signer_not_paid(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    """Discovery says DEFAULT (within the ceiling); the challenge then carries DEFAULT + 1.

    The markup alone (× 1.012) would let the signer pay DEFAULT + 1; the ceiling caps
    maxPrice at DEFAULT, so the signer answers 481 and no ticket exists.
    """
    risen = DEFAULT_PRICE_WEI + 1
    sandbox.add_fault("POST", RUNNER_1, delay=1.0, times=1)  # hold the unpaid challenge

    def raise_the_price_while_the_challenge_waits() -> None:
        deadline = time.monotonic() + 10
        while not calls(sandbox, RUNNER_1) and time.monotonic() < deadline:
            time.sleep(0.02)
        set_runner(sandbox, RUNNER_1_ID, price=str(risen))

    thread = threading.Thread(target=raise_the_price_while_the_challenge_waits)
    thread.start()
    try:
        _, error = generate_error(
            signer_credentials, guard, LivepeerPriceExceededError, max_fee_wei=DEFAULT_PRICE_WEI
        )
    finally:
        thread.join()

    assert type(error) is LivepeerPriceExceededError  # the signer's 481, not our check
    assert error.status == 481
    assert f"exceeds request maxPrice ceiling {DEFAULT_PRICE_WEI}.000" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, PAYMENT_PATH)] == [481]
    assert max_prices(sandbox) == [
        {"price": str(DEFAULT_PRICE_WEI), "currency": "wei", "unit": "fixed"}
    ]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]  # never a paid call


# --- (d) no ceiling: unchanged -----------------------------------------------------------


def test_without_a_ceiling_max_price_follows_the_runner_price_and_markup(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, price=str(DEFAULT_PRICE_WEI * 2))

    _, result = generate(signer_credentials, guard, max_fee_wei=None)

    assert result.runner_url == f"{sandbox.url}{RUNNER_1}"  # the dear one, as before
    assert max_prices(sandbox) == [
        {"price": str(MARKED_UP_PRICE_WEI * 2), "currency": "wei", "unit": "fixed"}
    ]
    assert guard.records[0].expected_fee_wei == DEFAULT_PRICE_WEI * 2


# --- the ticket buyer's own check ------------------------------------------------------


def test_the_ticket_buyer_refuses_a_runner_above_the_ceiling_before_the_claim() -> None:
    """``TicketBuyer.buy`` checks again, before the claim, whoever calls it."""
    pricing = pricing_for_unit("fixed")
    assert not isinstance(pricing, str)
    runner = Runner(
        url="https://o.example/apps/r/app/",
        published_url="https://o.example/apps/r/app",
        app="image-generation/m",
        price_wei=1001,
        pricing=pricing,
    )
    guard = RecordingGuard()
    buyer = TicketBuyer(
        http=cast(LivepeerSession, None),  # never reached
        config=LivepeerConfig.from_settings(),
        signer=cast(SignerClient, None),
        guard=guard,
        model_id="m",
        request_id="gen-1",
        max_fee_wei=1000,
    )
    challenge = PaymentChallenge.model_validate({"payment_params": "cA==", "manifest_id": "abc"})

    with pytest.raises(PriceExceededError, match="lowest runner fee 1001 wei"):
        buyer.buy(runner, challenge)

    assert guard.calls == []
    assert buyer.tickets_paid == 0
