"""Read-only staff view of generations (support and debugging)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inference.models import Generation


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin[Generation]):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
