"""The generate form (the no-JavaScript path of /generate/).

The form only turns the posted strings into the shapes the service takes: the
size chip "1024x576" becomes ``width``/``height`` and the seed becomes an int.
Every rule (prompt length, allowed models, size bounds, seed range) lives in
``inference.services.generation_create``, so the page, the JSON API and the
service report the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django import forms

from inference.services import SEED_MAX

_SIZE_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
_SEED_RE = re.compile(r"-?[0-9]{1,20}")

SIZE_REQUIRED_MESSAGE = "Choose an image size."
SEED_INVALID_MESSAGE = f"Seed must be a whole number between 0 and {SEED_MAX}."

# Service error keys that the form shows under a different field.
_SERVICE_FIELD_TO_FORM_FIELD = {"width": "size", "height": "size"}


def size_value(width: int, height: int) -> str:
    return f"{width}x{height}"


@dataclass(frozen=True)
class SizeOption:
    """One size chip: a preset from ``size_presets()`` (or the size being reused)."""

    label: str
    width: int
    height: int
    checked: bool

    @property
    def value(self) -> str:
        return size_value(self.width, self.height)

    @property
    def shape(self) -> str:
        """CSS modifier for the little aspect-ratio glyph on the chip."""
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"


class GenerationForm(forms.Form):
    # Rendered by templates/inference/generate.html (chips and a model select
    # need more markup than the default widgets give).
    prompt = forms.CharField(required=False, strip=True)
    negative_prompt = forms.CharField(required=False, strip=True)
    model_id = forms.CharField(required=False)
    size = forms.CharField(required=False)
    seed = forms.CharField(required=False, strip=True)
    # One per rendering of the form (``inference.views``): a second post of the same form
    # (a double click, a resubmitted reload) shows the first one's image, never makes two.
    idempotency_key = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_size(self) -> tuple[int, int]:
        match = _SIZE_RE.fullmatch(self.cleaned_data.get("size") or "")
        if match is None:
            raise forms.ValidationError(SIZE_REQUIRED_MESSAGE, code="size")
        return int(match.group(1)), int(match.group(2))

    def clean_seed(self) -> int | None:
        text: str = self.cleaned_data.get("seed") or ""
        if not text:
            return None
        if not _SEED_RE.fullmatch(text):
            raise forms.ValidationError(SEED_INVALID_MESSAGE, code="seed")
        return int(text)  # the range is the service's rule

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``generation_create`` (call after ``is_valid()``)."""
        width, height = self.cleaned_data["size"]
        return {
            "prompt": self.cleaned_data["prompt"],
            "negative_prompt": self.cleaned_data["negative_prompt"],
            "model_id": self.cleaned_data["model_id"] or None,
            "width": width,
            "height": height,
            "seed": self.cleaned_data["seed"],
        }

    def add_service_errors(self, field_errors: dict[str, str]) -> None:
        """Show a ``GenerationValidationError``'s messages under the matching fields."""
        for name, message in field_errors.items():
            field = _SERVICE_FIELD_TO_FORM_FIELD.get(name, name)
            if field not in self.fields:
                field = None  # type: ignore[assignment]
            if field and message in self.errors.get(field, []):
                continue  # width and height often say the same thing
            self.add_error(field, message)

    def size_options(self, presets: list[tuple[str, int, int]]) -> list[SizeOption]:
        """The chips to render, with the current choice checked.

        A size that is not a preset (e.g. "Generate similar" on an API-made
        image) is offered as an extra chip so it can be reused as is.
        """
        current = self["size"].value() or ""
        options = [
            SizeOption(label, width, height, checked=size_value(width, height) == current)
            for label, width, height in presets
        ]
        match = _SIZE_RE.fullmatch(current)
        if match and not any(option.checked for option in options):
            width, height = int(match.group(1)), int(match.group(2))
            options.append(SizeOption("Previous size", width, height, checked=True))
        return options
