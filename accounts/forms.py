"""The create-a-key form of the API page (turns the posted strings into service arguments).

The rules (a name, an expiry in the future) live in ``accounts.services.api_key_create``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms
from django.utils import timezone

from accounts.models import API_KEY_NAME_MAX_LENGTH

#: Expiry choices, in days ("" = never).
API_KEY_EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name",
        required=False,
        widget=forms.TextInput(
            attrs={"placeholder": "e.g. nightly batch script", "maxlength": API_KEY_NAME_MAX_LENGTH}
        ),
    )
    expires_in_days = forms.ChoiceField(
        label="Expires", choices=API_KEY_EXPIRY_CHOICES, required=False
    )

    def expires_at(self) -> datetime | None:
        """The expiry the chosen choice means, from now (call after ``is_valid()``)."""
        days = self.cleaned_data.get("expires_in_days") or ""
        return timezone.now() + timedelta(days=int(days)) if days else None


class WebhookEndpointForm(forms.Form):
    """The webhook URL of the API page (the rules are ``accounts.webhooks``)."""

    url = forms.CharField(
        label="Endpoint URL",
        required=False,
        widget=forms.URLInput(
            attrs={"placeholder": "https://example.com/pixelhouse/webhook", "maxlength": 2000}
        ),
    )
