"""Staff forms for the billing admin. Amounts are dollars and cents (``UsdAmountField``)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone

from billing.models import Plan
from billing.money import MoneyParseError, parse_usd_amount
from billing.plan_policy import plan_policy

_KEY = re.compile(r"[0-9a-f]{32}", re.ASCII)


class _IdempotentForm(forms.Form):
    """Carries a one-time key rendered into the page: submitting the page twice reuses it."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", uuid.uuid4().hex)
        super().__init__(*args, **kwargs)

    def clean_idempotency_key(self) -> str:
        key = str(self.cleaned_data["idempotency_key"])
        if not _KEY.fullmatch(key):
            raise forms.ValidationError("Reload the page and submit again.")
        return key


class UsdAmountField(forms.CharField):
    """Dollars and cents typed by staff (``12.50``, ``$0.25``), trimmed, to exact micros."""

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        try:
            return parse_usd_amount(text, maximum=settings.BILLING_MAX_STAFF_AMOUNT_MICROS)
        except MoneyParseError as exc:
            raise forms.ValidationError(str(exc), code="invalid_amount") from exc


class CreditAdjustForm(_IdempotentForm):
    operation = forms.ChoiceField(
        choices=[
            ("grant", "Grant promotional credit (add; spent before purchased credit)"),
            ("deduct", "Deduct credit (take away; promotional credit first)"),
        ],
        widget=forms.RadioSelect,
    )
    amount_micros = UsdAmountField(
        label="Amount (USD)",
        help_text="Dollars and cents, e.g. 12.50 (down to $0.000001).",
    )
    reason = forms.CharField(max_length=500, help_text="Required; shown in the user's ledger.")
    expires_at = forms.DateTimeField(
        required=False,
        label="Promotional credit expires (optional)",
        help_text="UTC, e.g. 2026-12-31 23:59. Empty: never. What is left then is taken back.",
    )

    def clean_amount_micros(self) -> int:
        amount = self.cleaned_data["amount_micros"]
        if amount is None or amount == 0:
            raise forms.ValidationError("Enter an amount above zero.")
        return int(amount)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        expires_at = data.get("expires_at")
        if expires_at is not None and data.get("operation") == "deduct":
            self.add_error("expires_at", "Only a grant of promotional credit expires.")
        elif expires_at is not None and expires_at <= timezone.now():
            self.add_error("expires_at", "The expiry must be in the future.")
        return data


class PlanChangeForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.filter(is_active=True))
    subscription_starts_at = forms.DateTimeField(
        required=False, help_text="Subscriptions: start of the active period (UTC)."
    )
    subscription_ends_at = forms.DateTimeField(
        required=False, help_text="Subscriptions: end of the active period (UTC)."
    )
    reason = forms.CharField(max_length=500)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        starts, ends = data.get("subscription_starts_at"), data.get("subscription_ends_at")
        if starts and ends and ends <= starts:
            raise forms.ValidationError("The period must end after it starts.")
        plan = data.get("plan")
        if plan is not None and plan_policy(plan).has_subscription and not ends:
            self.add_error(
                "subscription_ends_at",
                "A subscription needs the end of its active period; without one the user "
                "cannot generate.",
            )
        return data


class SuspendForm(forms.Form):
    suspended = forms.BooleanField(required=False, label="Suspended (no new images)")
    reason = forms.CharField(max_length=500, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("suspended") and not str(data.get("reason", "")).strip():
            self.add_error("reason", "Say why the account is suspended.")
        return data


class TopUpForm(_IdempotentForm):
    """Merchant mode "Add credit": a preset (``amount``) or a custom amount in dollars
    and cents (``custom_amount`` wins when filled). pymthouse takes $1.00 … $10,000.00
    in whole cents; the service checks again."""

    amount = forms.CharField(max_length=20, required=False)
    custom_amount = forms.CharField(max_length=20, required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        text = (cleaned.get("custom_amount") or "").strip() or (cleaned.get("amount") or "")
        if not text:
            self.add_error("amount", "Choose an amount.")
            return cleaned
        try:
            micros = parse_usd_amount(text)
        except MoneyParseError as exc:
            self.add_error("amount", str(exc))
            return cleaned
        if micros % 10_000:
            self.add_error("amount", "Enter whole cents, such as 12.50.")
        elif not 1_000_000 <= micros <= 10_000_000_000:
            self.add_error("amount", "Choose an amount between $1.00 and $10,000.00.")
        else:
            cleaned["amount_micros"] = micros
        return cleaned
