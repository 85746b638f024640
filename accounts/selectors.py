"""Reads for the accounts app."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ProvisioningStatus, User


def user_list_needing_provisioning() -> QuerySet[User]:
    return User.objects.exclude(provisioning_status=ProvisioningStatus.PROVISIONED)
