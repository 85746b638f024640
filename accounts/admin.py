"""Staff interface over accounts.services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User
from accounts.services import user_provision_retry, user_provision_schedule, user_set_active


@admin.register(User)
class UserAdmin(DjangoUserAdmin[User]):
    ordering = ("-date_joined",)
    list_display = (
        "email",
        "external_user_id",
        "provisioning_status",
        "pymthouse_active",
        "is_active",
        "is_staff",
        "date_joined",
    )
    list_filter = ("provisioning_status", "is_active", "is_staff", "is_superuser")
    search_fields = ("email", "external_user_id", "first_name", "last_name")
    readonly_fields = (
        "external_user_id",
        "provisioning_status",
        "provisioning_error",
        "provisioning_attempts",
        "provisioned_at",
        "pymthouse_user_id",
        "pymthouse_active",
        "last_login",
        "date_joined",
    )
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        (
            "pymthouse",
            {
                "fields": (
                    "external_user_id",
                    "provisioning_status",
                    "provisioning_error",
                    "provisioning_attempts",
                    "provisioned_at",
                    "pymthouse_user_id",
                    "pymthouse_active",
                )
            },
        ),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    actions = ("deactivate_users", "reactivate_users", "retry_provisioning")

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        if change and "is_active" in form.changed_data:
            desired = obj.is_active
            obj.is_active = not desired  # let the service make (and log) the change
            super().save_model(request, obj, form, change)
            user_set_active(user=obj, is_active=desired, acting_user=request.user)  # type: ignore[arg-type]
            return
        super().save_model(request, obj, form, change)
        if not change:
            user_provision_schedule(user=obj)

    @admin.action(description="Deactivate selected users (here and at pymthouse)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_set_active(user=user, is_active=False, acting_user=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"Deactivated {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected users (here and at pymthouse)")
    def reactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_set_active(user=user, is_active=True, acting_user=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"Reactivated {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(description="Retry pymthouse provisioning")
    def retry_provisioning(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_provision_retry(user=user, acting_user=request.user)  # type: ignore[arg-type]
        self.message_user(
            request, f"Provisioning scheduled for {queryset.count()} user(s).", messages.SUCCESS
        )
