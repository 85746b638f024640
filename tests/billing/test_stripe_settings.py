"""The payments settings are validated once, at start-up (config/settings.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import stripe_settings_validate

GOOD: dict[str, Any] = {
    "STRIPE_SECRET_KEY": "sk_test_x",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_x",
    "STRIPE_API_BASE": "https://api.stripe.com",
    "STRIPE_JS_URL": "https://js.stripe.com/v3/",
    "STRIPE_TIMEOUT_SECONDS": 20.0,
    "BILLING_CREDIT_PRESETS_MICROS": [10_000_000, 25_000_000],
    "BILLING_CREDIT_MIN_MICROS": 5_000_000,
    "BILLING_CREDIT_MAX_MICROS": 500_000_000,
    "BILLING_AUTO_TOPUP_THRESHOLD_MICROS": 5_000_000,
    "BILLING_AUTO_TOPUP_AMOUNT_MICROS": 25_000_000,
}


def test_the_defaults_and_payments_off_are_valid() -> None:
    stripe_settings_validate(GOOD)
    stripe_settings_validate({**GOOD, "STRIPE_SECRET_KEY": "", "STRIPE_PUBLISHABLE_KEY": ""})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BILLING_CREDIT_MIN_MICROS", 0, "BILLING_CREDIT_MIN_MICROS"),
        ("BILLING_CREDIT_MAX_MICROS", 4_000_000, "BILLING_CREDIT_MIN_MICROS"),
        ("BILLING_CREDIT_MIN_MICROS", 5_000_001, "whole cents"),
        ("BILLING_CREDIT_PRESETS_MICROS", [600_000_000], "BILLING_CREDIT_PRESETS_MICROS"),
        ("BILLING_CREDIT_PRESETS_MICROS", [], "BILLING_CREDIT_PRESETS_MICROS"),
        ("BILLING_AUTO_TOPUP_AMOUNT_MICROS", 1_000_000, "BILLING_AUTO_TOPUP_AMOUNT_MICROS"),
        ("STRIPE_JS_URL", "js.stripe.com/v3/", "STRIPE_JS_URL"),
        ("STRIPE_API_BASE", "ftp://api.stripe.com", "STRIPE_API_BASE"),
        ("STRIPE_SECRET_KEY", "pk_test_wrong", "STRIPE_SECRET_KEY"),
        ("STRIPE_PUBLISHABLE_KEY", "", "STRIPE_PUBLISHABLE_KEY"),
        ("STRIPE_WEBHOOK_SECRET", "", "STRIPE_WEBHOOK_SECRET"),
        ("STRIPE_TIMEOUT_SECONDS", 0.0, "STRIPE_TIMEOUT_SECONDS"),
    ],
)
def test_an_unusable_value_stops_the_process(name: str, value: Any, says: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=says):
        stripe_settings_validate({**GOOD, name: value})
