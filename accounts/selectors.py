"""Reads for the accounts app."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ApiKey, ProvisioningStatus, User


def user_list_needing_provisioning() -> QuerySet[User]:
    return User.objects.exclude(provisioning_status=ProvisioningStatus.PROVISIONED)


def api_key_list(*, user_id: int) -> QuerySet[ApiKey]:
    """``user_id``'s keys, newest first, revoked ones included (the page shows them)."""
    return ApiKey.objects.for_user(user_id).order_by("-created_at", "-pk")


def api_key_get(*, user_id: int, api_key_id: int) -> ApiKey | None:
    """One of ``user_id``'s keys; another user's key is None, like one that does not exist."""
    return ApiKey.objects.for_user(user_id).filter(pk=api_key_id).first()
