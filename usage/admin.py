"""Read-only admin for the usage mirror (written only by ``usage.services.sync``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.admin import ReadOnlyAdmin
from usage.models import (
    UsageDrift,
    UsageManifest,
    UsageManifestRevision,
    UsageSyncRun,
    UsageSyncState,
    UsageUserAggregate,
)


@admin.register(UsageSyncState)
class UsageSyncStateAdmin(ReadOnlyAdmin):
    list_display = ("status", "watermark", "last_success_at", "last_finished_at", "user_count")


@admin.register(UsageSyncRun)
class UsageSyncRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "status",
        "users_seen",
        "users_changed",
        "manifests_new",
        "revisions_new",
        "settled",
        "duration_ms",
    )
    list_filter = ("status",)
    date_hierarchy = "started_at"


@admin.register(UsageUserAggregate)
class UsageUserAggregateAdmin(ReadOnlyAdmin):
    list_display = (
        "external_user_id",
        "user",
        "request_count",
        "fee_wei",
        "network_fee_usd_micros",
        "last_used_at",
    )
    search_fields = ("external_user_id", "user__email")
    raw_id_fields = ("user",)
    show_full_result_count = False


class UsageManifestRevisionInline(admin.TabularInline[UsageManifestRevision, UsageManifest]):
    model = UsageManifestRevision
    extra = 0
    can_delete = False
    readonly_fields = ("fee_wei", "network_fee_usd_micros", "seen_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageManifest)
class UsageManifestAdmin(ReadOnlyAdmin):
    list_display = (
        "manifest_id",
        "external_user_id",
        "fee_wei",
        "network_fee_usd_micros",
        "generation",
        "day",
        "flagged",
    )
    list_filter = ("flagged",)
    search_fields = ("manifest_id", "external_user_id")
    raw_id_fields = ("user", "generation")
    inlines = (UsageManifestRevisionInline,)
    show_full_result_count = False


@admin.register(UsageDrift)
class UsageDriftAdmin(ReadOnlyAdmin):
    list_display = ("external_user_id", "day", "local_debit_wei", "metered_fee_wei", "alert")
    list_filter = ("alert",)
    search_fields = ("external_user_id",)
    show_full_result_count = False
