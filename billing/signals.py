"""Keep the email denormalised onto ``UsageUserAggregate`` current (the staff table)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Lower

from billing.usage_models import UsageUserAggregate


def aggregate_email_follow_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` of a user: one UPDATE, only when an aggregate shows another email."""
    email = instance.email or ""
    UsageUserAggregate.objects.filter(user_id=instance.pk).exclude(email=email).update(
        email=email, search_email=email.lower()
    )


def usage_aggregates_fill_search() -> None:
    """Fill the denormalised columns of rows written before they existed (post_migrate)."""
    UsageUserAggregate.objects.filter(search_user="").exclude(external_user_id="").update(
        search_user=Lower("external_user_id")
    )
    emails = get_user_model().objects.filter(pk=OuterRef("user_id")).values("email")[:1]
    UsageUserAggregate.objects.filter(user__isnull=False, email="").update(
        email=Subquery(emails), search_email=Lower(Subquery(emails))
    )
