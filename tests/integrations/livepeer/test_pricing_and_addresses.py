"""Pure rules of the live-runner client: units, maxPrice, the app URL, refused addresses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from integrations.livepeer.addresses import refused_reason
from integrations.livepeer.live_runner import app_url, pricing_for_unit
from integrations.livepeer.live_runner.payment import RELEASING_STATUSES
from integrations.livepeer.live_runner.pricing import (
    LIVE_FIRST_PAYMENT_SECONDS,
    Pricing,
    expected_fee_wei,
    max_price,
    max_price_per_unit,
    within_ceiling,
)


@pytest.mark.parametrize(
    ("unit", "payment_type", "units"),
    [("fixed", "fixed", 1), ("seconds", "live", 10), (" Fixed ", "fixed", 1)],
)
def test_paid_units_map_to_a_signer_type_never_the_empty_one(
    unit: str, payment_type: str, units: int
) -> None:
    pricing = pricing_for_unit(unit)

    assert isinstance(pricing, Pricing)
    assert pricing.payment_type == payment_type
    assert pricing.payment_type != ""
    assert pricing.units_per_payment == units
    assert LIVE_FIRST_PAYMENT_SECONDS == 10


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        ("720p-pixel-seconds", "720p-pixel-seconds (live video)"),
        ("pixel", "unknown price unit 'pixel'"),
        ("hour", "unknown price unit 'hour'"),
        ("", "unknown price unit ''"),
    ],
)
def test_other_units_are_refused_with_a_reason(unit: str, reason: str) -> None:
    refusal = pricing_for_unit(unit)

    assert isinstance(refusal, str)
    assert reason in refusal


def test_expected_fee_is_exact_for_prices_beyond_2_64() -> None:
    fixed = pricing_for_unit("fixed")
    seconds = pricing_for_unit("seconds")
    assert isinstance(fixed, Pricing)
    assert isinstance(seconds, Pricing)
    huge = 2**64 + 12345

    assert expected_fee_wei(4_768_371_000_000, fixed) == 4_768_371_000_000
    assert expected_fee_wei(huge, fixed) == 18446744073709563961
    assert expected_fee_wei(huge, seconds) == 184467440737095639610
    assert expected_fee_wei(2**255, seconds) == 10 * 2**255


def test_max_price_rounds_up_exactly_in_the_runner_unit() -> None:
    assert max_price(4_768_371_000_000, "fixed", Decimal("1.012")) == {
        "price": "4825591452000",
        "currency": "wei",
        "unit": "fixed",
    }
    assert max_price(1001, "seconds", Decimal("1.012"))["price"] == "1014"  # 1013.012, rounded up
    # 78 digits stay exact (the default decimal context would round at 28).
    big = 2**256 - 1
    assert max_price(big, "fixed", Decimal("1"))["price"] == str(big)
    assert max_price(big, "fixed", Decimal("1.5"))["price"] == str(-(-big * 3 // 2))


def test_max_price_never_exceeds_the_cap_per_unit() -> None:
    markup = Decimal("1.012")
    # The cap binds below the marked-up price, is ignored above it, and stays exact.
    assert max_price(1001, "seconds", markup, cap_per_unit=1005)["price"] == "1005"
    assert max_price(1001, "seconds", markup, cap_per_unit=2000)["price"] == "1014"
    assert max_price(1001, "fixed", markup, cap_per_unit=1001)["price"] == "1001"
    big = 2**256 - 1
    assert max_price(big, "fixed", Decimal("1.5"), cap_per_unit=big)["price"] == str(big)


def test_the_cap_per_unit_is_the_ceiling_floored_by_the_units_paid() -> None:
    fixed = pricing_for_unit("fixed")
    seconds = pricing_for_unit("seconds")
    assert isinstance(fixed, Pricing)
    assert isinstance(seconds, Pricing)

    assert max_price_per_unit(10_000_500_009, fixed) == 10_000_500_009
    assert max_price_per_unit(10_000_500_009, seconds) == 1_000_050_000
    assert max_price_per_unit(9, seconds) == 0
    huge = 10 * 2**255 + 9
    assert max_price_per_unit(huge, seconds) == 2**255
    # Whatever passes the fee check has a cap of at least its own price.
    for price in (1, 7, 1_000_000_007, 2**200 + 3):
        for pricing in (fixed, seconds):
            fee = expected_fee_wei(price, pricing)
            assert within_ceiling(price, pricing, fee)
            assert not within_ceiling(price, pricing, fee - 1)
            assert max_price_per_unit(fee, pricing) == price
            assert max_price_per_unit(fee + pricing.units_per_payment - 1, pricing) == price
    assert within_ceiling(2**255, seconds, None)


@pytest.mark.parametrize(
    ("published", "app_path", "expected"),
    [
        ("https://o.example/apps/r1/app", "", "https://o.example/apps/r1/app/"),
        ("https://o.example/apps/r1/app/", "", "https://o.example/apps/r1/app/"),
        (
            "https://o.example/apps/r1/app",
            "/v1/generate",
            "https://o.example/apps/r1/app/v1/generate",
        ),
    ],
)
def test_app_url_always_has_the_trailing_slash(
    published: str, app_path: str, expected: str
) -> None:
    assert app_url(published, app_path) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8935/apps/r/app/",
        "http://localhost/apps/r/app/",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://172.16.5.5/x",
        "http://169.254.1.1/x",
        "http://100.64.0.1/x",
        "http://[::1]/x",
        "http://[fe80::1]/x",
        "http://[fd12:3456::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(url: str) -> None:
    reason = refused_reason(url, allow_private=False)

    assert reason is not None
    assert "LIVEPEER_ALLOW_PRIVATE_ADDRESSES" in reason
    assert refused_reason(url, allow_private=True) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/x", "is not an absolute http(s) URL"),
        ("/relative", "is not an absolute http(s) URL"),
        ("http://user:pw@8.8.8.8/x", "carries credentials"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str, reason: str) -> None:
    assert refused_reason(url, allow_private=True) == reason


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_metadata_addresses_are_refused_even_when_private_is_allowed(url: str) -> None:
    reason = refused_reason(url, allow_private=True)

    assert reason is not None
    assert "metadata" in reason


def test_public_literal_address_is_accepted() -> None:
    assert refused_reason("https://8.8.8.8/apps/r/app/", allow_private=False) is None


def test_only_answers_given_before_a_ticket_release_the_claim() -> None:
    assert set(RELEASING_STATUSES) == {400, 401, 403, 429, 480, 481, 482, 483, 503}
    for status in (500, 502, 504):
        assert status not in RELEASING_STATUSES
