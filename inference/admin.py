"""Read-only staff view of generations (support and debugging)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inference.models import AdmittedImage, Generation


class _ReadOnly:
    """Rows written only by services: viewable, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(_ReadOnly, admin.ModelAdmin[Generation]):
    list_display = (
        "id",
        "owner",
        "status",
        "stage",
        "error_code",
        "model_id",
        "width",
        "height",
        "tickets_paid",
        "price_unit",
        "expected_fee_wei",
        "manifest_id",
        "cost_usd_micros",
        "created_at",
    )
    list_filter = ("status", "error_code", "backend", "model_id", "price_unit")
    list_select_related = ("owner",)
    search_fields = ("id", "owner__email", "owner__external_user_id", "prompt", "manifest_id")
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Generation._meta.fields]


@admin.register(AdmittedImage)
class AdmittedImageAdmin(_ReadOnly, admin.ModelAdmin[AdmittedImage]):
    """The append-only admission record allowances count (read-only)."""

    list_display = (
        "generation_id",
        "owner",
        "admitted_at",
        "counts",
        "paid_outcome_unknown",
        "manifest_id",
        "deleted_at",
    )
    list_filter = ("counts", "paid_outcome_unknown")
    list_select_related = ("owner",)
    search_fields = ("generation_id", "owner__email", "manifest_id")
    date_hierarchy = "admitted_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in AdmittedImage._meta.fields]
