"""Keep the email denormalised onto ``UsageUserAggregate`` current (the staff table).

The sync writes each changed user's e-mail; between syncs an e-mail change reaches the
table through the accounts extension point ``accounts.hooks`` (registered in
``usage.apps``), called by ``accounts.services.user_email_change`` and every other
accounts path that changes an e-mail.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Lower

from usage.models import UsageUserAggregate


def aggregate_email_follow(*, user_id: int, email: str) -> None:
    """One UPDATE, only when an aggregate shows another email."""
    email = email or ""
    UsageUserAggregate.objects.filter(user_id=user_id).exclude(email=email).update(
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
