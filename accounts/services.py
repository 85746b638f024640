"""Writes and workflows for users and their pymthouse identity.

Provisioning converges pymthouse to the local state: the task upserts the user
with ``status`` = active/inactive from ``User.is_active``. The upsert is
idempotent at pymthouse (keyed by externalUserId), so retries, redeliveries and
the periodic sweep are all safe to repeat.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts import tasks
from accounts.hooks import account_closed_notify, email_changed_notify, user_registered_notify
from accounts.models import ProvisioningStatus, User
from integrations.pymthouse import PymthouseError, get_client

logger = logging.getLogger(__name__)

# A sync that sees the local state change under it runs again, at most this often.
_MAX_CONVERGENCE_ROUNDS = 3


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None = None,
    external_user_id: str | None = None,
    email_verified: bool = False,
    **extra_fields: Any,
) -> User:
    """Create a user and schedule its provisioning at pymthouse after commit.

    ``email_verified`` records the address as verified for allauth (staff-created and
    seeded users); people who sign up verify it themselves.
    """
    user = User.objects.build_user(email, password, **extra_fields)
    if external_user_id is not None:
        user.external_user_id = external_user_id
    user_register(user=user)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=email_verified)
    return user


@transaction.atomic
def user_register(*, user: User) -> User:
    """Insert a new user built elsewhere (allauth's signup and SSO forms, the admin's add form).

    The one place a user row is first written: validated, saved, provisioning scheduled.
    """
    if not user._state.adding:
        raise ValueError("user_register only inserts new users")
    user.full_clean(exclude=["password"])
    user.save()
    user_registered_notify(user_id=user.pk)  # billing opens its account on the default plan
    user_provision_schedule(user=user)
    logger.info("user %s registered as %s", user.pk, user.external_user_id)
    return user


def user_provision_schedule(*, user: User) -> None:
    """Enqueue the pymthouse sync for ``user`` once the current transaction commits."""
    user_id = user.pk
    transaction.on_commit(lambda: tasks.provision_user_task.delay(user_id))


def user_sessions_end(*, user: User) -> int:
    """End every tracked session of ``user`` (allauth.usersessions); returns how many.

    Untracked sessions end too: Django's ModelBackend refuses an inactive or deleted
    user on the next request.
    """
    ended = 0
    for session in UserSession.objects.filter(user=user):
        session.end()
        ended += 1
    return ended


@transaction.atomic
def user_set_active(*, user: User, is_active: bool, acting_user: User | None) -> User:
    """Activate or deactivate a local user; pymthouse follows after commit.

    Deactivation ends the user's sessions at once (and any untracked one on its next
    request). A deleted user cannot be reactivated.
    """
    if is_active and user.deleted_at is not None:
        raise ValueError("A deleted user cannot be reactivated.")
    if not is_active:
        user_sessions_end(user=user)
        account_closed_notify(user_id=user.pk)
    if user.is_active != is_active:
        user.is_active = is_active
        user.provisioning_status = ProvisioningStatus.PENDING
        user.save(update_fields=["is_active", "provisioning_status"])
        logger.info(
            "user %s set active=%s by %s",
            user.pk,
            is_active,
            acting_user.pk if acting_user else "system",
        )
    user_provision_schedule(user=user)
    return user


@transaction.atomic
def user_email_change(*, user: User, email: str) -> User:
    """Set ``user``'s e-mail and tell the apps that keep a copy (``accounts.hooks``).

    Allauth's verified change of the primary address and the admin's change form reach
    the same notification (``user_email_changed``, ``UserAdmin.save_model``).
    """
    user.email = email
    user.save(update_fields=["email"])
    email_changed_notify(user_id=user.pk, email=user.email)
    return user


def user_email_changed(*, user: User, **kwargs: Any) -> None:
    """allauth's ``email_changed`` (a verified new primary address, already saved)."""
    email_changed_notify(user_id=user.pk, email=user.email)


@transaction.atomic
def user_delete(*, user: User, acting_user: User | None) -> User:
    """Delete an account without losing its billing history.

    The row stays (generations, charges and pymthouse usage keep joining on its
    externalUserId); personal data, linked providers, e-mail addresses, second factors
    and sessions go; pymthouse marks the user inactive after commit.
    """
    user_sessions_end(user=user)
    SocialAccount.objects.filter(user=user).delete()
    EmailAddress.objects.filter(user=user).delete()
    Authenticator.objects.filter(user=user).delete()
    user.email = f"deleted-{user.external_user_id}@deleted.invalid"
    user.first_name = user.last_name = ""
    user.set_unusable_password()
    user.is_active = user.is_staff = user.is_superuser = False
    user.deleted_at = timezone.now()
    user.provisioning_status = ProvisioningStatus.PENDING
    user.save()
    email_changed_notify(user_id=user.pk, email=user.email)
    account_closed_notify(user_id=user.pk)
    user_provision_schedule(user=user)
    logger.info(
        "user %s deleted by %s", user.pk, acting_user.pk if acting_user is not None else "system"
    )
    return user


def user_provision(*, user_id: int) -> User | None:
    """Upsert ``user_id`` at pymthouse with its current local status.

    Raises the client's retryable errors (the task retries them); terminal
    errors are recorded by the task through :func:`user_provision_fail`.
    Returns None when the user no longer exists.
    """
    client = get_client()
    for _ in range(_MAX_CONVERGENCE_ROUNDS):
        user = User.objects.filter(pk=user_id).first()
        if user is None:
            return None
        sent_active = user.is_active
        User.objects.filter(pk=user_id).update(provisioning_attempts=F("provisioning_attempts") + 1)
        result = client.upsert_user(
            external_user_id=user.external_user_id,
            email=user.email,
            status="active" if sent_active else "inactive",
        )
        with transaction.atomic():
            user = User.objects.select_for_update().get(pk=user_id)
            user.pymthouse_user_id = result.user.id
            user.pymthouse_active = result.user.status == "active"
            user.provisioned_at = user.provisioned_at or timezone.now()
            user.provisioning_error = ""
            converged = user.is_active == sent_active
            user.provisioning_status = (
                ProvisioningStatus.PROVISIONED if converged else ProvisioningStatus.PENDING
            )
            user.save(
                update_fields=[
                    "pymthouse_user_id",
                    "pymthouse_active",
                    "provisioned_at",
                    "provisioning_error",
                    "provisioning_status",
                ]
            )
        logger.info(
            "pymthouse user %s %s (active=%s)",
            user.external_user_id,
            "created" if result.created else "updated",
            sent_active,
        )
        if converged:
            return user
    return user


def user_provision_fail(*, user_id: int, error: PymthouseError | str) -> None:
    """Record a provisioning failure that will not be retried automatically."""
    message = str(error)[:2000]
    User.objects.filter(pk=user_id).update(
        provisioning_status=ProvisioningStatus.FAILED,
        provisioning_error=message,
    )
    logger.warning("pymthouse provisioning of user %s failed: %s", user_id, message)


# A user whose provisioning ran this many times without converging (a worker that
# keeps dying on it) is marked failed instead of being re-enqueued again.
PROVISION_MAX_ATTEMPTS = 20


@transaction.atomic
def user_provision_retry(*, user: User, acting_user: User) -> None:
    """Staff retry of a provisioning (e.g. after ``failed``): back to pending, attempts reset."""
    User.objects.filter(pk=user.pk).update(
        provisioning_status=ProvisioningStatus.PENDING, provisioning_attempts=0
    )
    logger.info("provisioning of user %s retried by %s", user.pk, acting_user.pk)
    user_provision_schedule(user=user)


def users_provision_pending(*, older_than: timedelta = timedelta(minutes=5)) -> int:
    """Re-enqueue users stuck in ``pending`` (lost message, crashed worker).

    Users that joined within ``older_than`` are left alone: their first task is
    most likely still in flight. Users past ``PROVISION_MAX_ATTEMPTS`` end ``failed``.
    """
    cutoff = timezone.now() - older_than
    pending = User.objects.filter(
        provisioning_status=ProvisioningStatus.PENDING, date_joined__lt=cutoff
    )
    for user_id in pending.filter(provisioning_attempts__gte=PROVISION_MAX_ATTEMPTS).values_list(
        "pk", flat=True
    )[:500]:
        user_provision_fail(user_id=user_id, error="gave up after repeated attempts")
    user_ids = list(
        pending.filter(provisioning_attempts__lt=PROVISION_MAX_ATTEMPTS).values_list(
            "pk", flat=True
        )[:500]
    )
    for user_id in user_ids:
        tasks.provision_user_task.delay(user_id)
    return len(user_ids)
