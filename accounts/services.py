"""Writes and workflows for users and their pymthouse identity.

Provisioning converges pymthouse to the local state: the task upserts the user
with ``status`` = active/inactive from ``User.is_active``. The upsert is
idempotent at pymthouse (keyed by externalUserId), so retries, redeliveries and
the periodic sweep are all safe to repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts import tasks
from accounts.errors import ApiKeyInvalidError, ApiKeyRateLimitedError
from accounts.hooks import account_closed_notify, email_changed_notify, user_registered_notify
from accounts.models import (
    API_KEY_NAME_MAX_LENGTH,
    API_KEY_PREFIX,
    API_KEY_VISIBLE_LENGTH,
    ApiKey,
    ProvisioningStatus,
    User,
)
from accounts.webhooks import webhook_endpoints_delete_for_user
from integrations.pymthouse import PymthouseError, SecretToken, get_client

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
    api_keys_revoke_all(user=user)
    webhook_endpoints_delete_for_user(user=user)
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


# --- Personal API keys ------------------------------------------------------------------

#: ``last_used_at`` is written at most this often per key: a script calling every second
#: must not turn each request into a write of the key's row.
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)
#: Longer than any key we issue (``phk_`` + 43); a longer bearer is not hashed at all.
_API_KEY_MAX_LENGTH = 100


@dataclass(frozen=True)
class ApiKeyCreated:
    """A new key and its secret, which exists only here: shown once, never stored."""

    api_key: ApiKey
    secret: SecretToken


def api_key_secret_digest(secret: str) -> str:
    """The stored form of a key: SHA-256, hex. The secret has 256 random bits, so a fast
    hash is safe (nothing to brute-force) and lets a request find its key by an index."""
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, user: User, name: str, expires_at: datetime | None, acting_user: User
) -> ApiKeyCreated:
    """Create a personal API key for ``user``; the secret is returned, never stored."""
    name = " ".join((name or "").split())
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Name the key (for example, the script that will use it)."
    elif len(name) > API_KEY_NAME_MAX_LENGTH:
        errors["name"] = f"Keep the name to {API_KEY_NAME_MAX_LENGTH} characters or fewer."
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "The expiry must be in the future."
    if errors:
        raise ApiKeyInvalidError(errors)
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        user=user,
        name=name,
        prefix=secret[:API_KEY_VISIBLE_LENGTH],
        secret_sha256=api_key_secret_digest(secret),
        expires_at=expires_at,
    )
    api_key.full_clean()
    api_key.save()
    logger.info(
        "API key %s (%s…) created for user %s by %s",
        api_key.pk,
        api_key.prefix,
        user.pk,
        acting_user.pk,
    )
    return ApiKeyCreated(api_key=api_key, secret=SecretToken(secret))


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, acting_user: User) -> ApiKey:
    """Revoke ``api_key`` (once: revoking a revoked key keeps its first revocation time)."""
    now = timezone.now()
    if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now):
        api_key.revoked_at = now
        logger.info("API key %s (%s…) revoked by %s", api_key.pk, api_key.prefix, acting_user.pk)
    else:
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_keys_revoke_all(*, user: User) -> int:
    """Revoke every key of ``user`` (the account was deleted); returns how many."""
    return (
        ApiKey.objects.for_user(user.pk)
        .filter(revoked_at__isnull=True)
        .update(revoked_at=timezone.now())
    )


def api_key_authenticate(*, secret: str) -> User | None:
    """The user a bearer ``phk_…`` key acts for, or None when it must be refused.

    Refused: an unknown, revoked or expired key, and any key of an inactive (deactivated
    or deleted) user. A usable key counts against ``API_KEY_RATE_LIMIT_COUNT`` per
    ``API_KEY_RATE_LIMIT_WINDOW_SECONDS`` (:class:`ApiKeyRateLimitedError` beyond) and
    has ``last_used_at`` moved on at most once per ``API_KEY_LAST_USED_RESOLUTION``.
    The secret is never logged: only the key's id and visible prefix are.
    """
    if not secret.startswith(API_KEY_PREFIX) or len(secret) > _API_KEY_MAX_LENGTH:
        return None
    digest = api_key_secret_digest(secret)
    api_key = ApiKey.objects.select_related("user").filter(secret_sha256=digest).first()
    if api_key is None or not hmac.compare_digest(api_key.secret_sha256, digest):
        logger.info("API key refused: unknown key")
        return None
    now = timezone.now()
    user = api_key.user
    if not api_key.is_usable_at(now) or not user.is_active or user.deleted_at is not None:
        logger.info(
            "API key %s (%s…) refused: revoked, expired or its user is inactive",
            api_key.pk,
            api_key.prefix,
        )
        return None
    _api_key_rate_limit(api_key_id=api_key.pk)
    ApiKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - API_KEY_LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    return user


def _api_key_rate_limit(*, api_key_id: int) -> None:
    """A fixed window per key in the shared cache (with Redis down it fails open)."""
    length = settings.API_KEY_RATE_LIMIT_WINDOW_SECONDS
    now = int(time.time())
    counter = f"api-key-rate:{api_key_id}:{now // length}"
    cache.add(counter, 0, timeout=length + 1)
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr: a new window
        cache.set(counter, 1, timeout=length + 1)
        count = 1
    if count > settings.API_KEY_RATE_LIMIT_COUNT:
        raise ApiKeyRateLimitedError(retry_after=max(1, length - now % length))
