"""Staff interface over accounts.services."""

from __future__ import annotations

from typing import Any

from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from accounts.hooks import email_changed_notify
from accounts.models import ApiKey, User, WebhookDelivery
from accounts.services import (
    api_key_revoke,
    user_delete,
    user_provision_retry,
    user_register,
    user_set_active,
)


@admin.register(User)
class UserAdmin(DjangoUserAdmin[User]):
    ordering = ("-date_joined",)
    list_display = (
        "email",
        "external_user_id",
        "provisioning_status",
        "pymthouse_active",
        "mfa_enabled",
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
        "linked_providers",
        "mfa_enabled",
        "deleted_at",
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
        ("Identity", {"fields": ("linked_providers", "mfa_enabled", "deleted_at")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    actions = ("deactivate_users", "reactivate_users", "retry_provisioning")

    @admin.display(description="Linked sign-in providers")
    def linked_providers(self, obj: User) -> str:
        accounts = SocialAccount.objects.filter(user=obj).order_by("provider")
        return ", ".join(f"{a.provider} ({a.uid})" for a in accounts) or "none"

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # One query for the changelist's MFA column, not one per row.
        totp = Authenticator.objects.filter(user=OuterRef("pk"), type=Authenticator.Type.TOTP)
        return super().get_queryset(request).annotate(has_totp=Exists(totp))

    @admin.display(description="MFA", boolean=True, ordering="has_totp")
    def mfa_enabled(self, obj: User) -> bool:
        return bool(getattr(obj, "has_totp", False))

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # Deleting scrubs the account and keeps its rows (user_delete), so nothing
        # related is listed as going away and no related permission is needed.
        users = [f"{user} (personal data removed; generations and billing kept)" for user in objs]
        return users, {"users": len(users)}, set(), []

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        user_delete(user=obj, acting_user=request.user)  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_delete(user=user, acting_user=request.user)  # type: ignore[arg-type]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        self._save_model(request, obj, form, change)
        if change and "email" in form.changed_data:
            # Inside the change form's transaction: the copies commit with the user row.
            email_changed_notify(user_id=obj.pk, email=obj.email)

    def _save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        if change and "is_active" in form.changed_data:
            desired = obj.is_active
            obj.is_active = not desired  # let the service make (and log) the change
            super().save_model(request, obj, form, change)
            user_set_active(user=obj, is_active=desired, acting_user=request.user)  # type: ignore[arg-type]
            return
        if change:
            super().save_model(request, obj, form, change)
        else:
            user_register(user=obj)

    @admin.action(description="Deactivate selected users (here and at pymthouse)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_set_active(user=user, is_active=False, acting_user=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"Deactivated {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected users (here and at pymthouse)")
    def reactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        reactivated = 0
        for user in queryset.filter(deleted_at__isnull=True):
            user_set_active(user=user, is_active=True, acting_user=request.user)  # type: ignore[arg-type]
            reactivated += 1
        self.message_user(request, f"Reactivated {reactivated} user(s).", messages.SUCCESS)

    @admin.action(description="Retry pymthouse provisioning")
    def retry_provisioning(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_provision_retry(user=user, acting_user=request.user)  # type: ignore[arg-type]
        self.message_user(
            request, f"Provisioning scheduled for {queryset.count()} user(s).", messages.SUCCESS
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Read-only: staff see a key by its prefix (never its hash) and may revoke it."""

    list_display = (
        "prefix",
        "name",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("revoked_at",)
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__email")
    raw_id_fields = ("user",)
    fields = ("prefix", "name", "user", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key is created by its user, who alone sees the secret

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    @admin.action(description="Revoke the selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        acting_user = request.user
        assert isinstance(acting_user, User)
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, acting_user=acting_user)
        self.message_user(request, "Revoked.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[WebhookDelivery]):
    """Read-only delivery log (support: why did a user's webhook not arrive?). The
    endpoint's signing secret appears only as its prefix."""

    list_display = (
        "event_id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "response_status",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event_type")
    list_select_related = ("endpoint", "endpoint__user")
    search_fields = ("event_id", "subject_id", "endpoint__user__email")
    fields = (
        "event_id",
        "event_type",
        "subject_id",
        "endpoint",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
        "body",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False
