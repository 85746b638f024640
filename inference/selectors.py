"""Reads for the inference app. Every read is scoped to its owner: another
user's generation is indistinguishable from one that does not exist."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db.models import QuerySet

from inference.models import Generation


def generation_list(*, owner_id: int) -> QuerySet[Generation]:
    return Generation.objects.for_owner(owner_id).order_by("-created_at")


def generation_get(*, owner_id: int, generation_id: uuid.UUID | str) -> Generation | None:
    try:
        key = uuid.UUID(str(generation_id))
    except ValueError:
        return None
    return Generation.objects.for_owner(owner_id).filter(pk=key).first()


def model_choices() -> list[str]:
    """Models users may pick (settings.INFERENCE_MODELS; the first is the default)."""
    return list(settings.INFERENCE_MODELS)


SIZE_PRESETS: tuple[tuple[str, int, int], ...] = (
    ("Square", 1024, 1024),
    ("Square (small)", 512, 512),
    ("Landscape 16:9", 1024, 576),
    ("Portrait 9:16", 576, 1024),
    ("Landscape 4:3", 1024, 768),
    ("Portrait 3:4", 768, 1024),
)


def size_presets() -> list[tuple[str, int, int]]:
    low, high = settings.INFERENCE_MIN_SIZE, settings.INFERENCE_MAX_SIZE
    return [p for p in SIZE_PRESETS if low <= p[1] <= high and low <= p[2] <= high]
