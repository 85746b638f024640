"""System checks for the billing settings (``manage.py check``).

Ids are stable: billing.E001-E009 are errors. Money settings are parsed with the same
grammar as every other amount, so a typo (``5e12``, ``1_000``) stops the start, not a
dashboard request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.db import DatabaseError

from billing.lock_objects import STANDARD_PLANS
from billing.models import Plan
from billing.money import MoneyParseError, parse_eth_usd_rate, parse_wei_text


@register()
def check_billing_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    try:
        parse_wei_text(settings.BILLING_ESTIMATED_FEE_WEI)
    except MoneyParseError:
        errors.append(
            Error("BILLING_ESTIMATED_FEE_WEI must be wei as plain digits.", id="billing.E001")
        )
    for value in settings.BILLING_LOW_BALANCE_THRESHOLDS_MICROS:
        try:
            parse_wei_text(value)
        except MoneyParseError:
            errors.append(
                Error(
                    "BILLING_LOW_BALANCE_THRESHOLDS_MICROS must be wei as plain digits, "
                    "comma-separated.",
                    id="billing.E002",
                )
            )
            break
    try:
        parse_eth_usd_rate(settings.BILLING_ETH_USD_RATE)
    except MoneyParseError:
        errors.append(
            Error(
                "BILLING_ETH_USD_RATE must be a positive decimal such as 3150.25: network "
                "fees are converted to dollars at it when no fresh metered rate is known.",
                id="billing.E003",
            )
        )
    if settings.BILLING_DEFAULT_PLAN not in {plan.slug for plan in STANDARD_PLANS}:
        try:
            known = Plan.objects.filter(slug=settings.BILLING_DEFAULT_PLAN).exists()
        except DatabaseError:
            known = True  # not migrated yet; account_open reports it on first use
        if not known:
            errors.append(
                Error(
                    f"BILLING_DEFAULT_PLAN {settings.BILLING_DEFAULT_PLAN!r} is not a plan.",
                    hint="Use a seeded slug (free, studio, pay-as-you-go, pay-per-image) "
                    "or create the plan in the admin first.",
                    id="billing.E004",
                )
            )
    for name in ("BILLING_STALE_HOLD_AFTER_SECONDS", "BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS"):
        if not isinstance(getattr(settings, name), int) or getattr(settings, name) <= 0:
            errors.append(Error(f"{name} must be a positive number of seconds.", id="billing.E005"))
    return errors
