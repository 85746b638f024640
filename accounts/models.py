"""Local users and the pymthouse identity each of them maps to.

Every user gets an ``external_user_id`` when created. It is the key pymthouse
knows the user by (``externalUserId`` in its Builder API and usage rows), it is
never an e-mail address, and it never changes: usage already metered upstream
under one id could not be joined back to the user under another.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.exceptions import ValidationError
from django.db import models

from accounts.validators import validate_external_user_id


def generate_external_user_id() -> str:
    """``usr_`` + 32 hex: opaque, stable, and within pymthouse's id grammar."""
    return f"usr_{uuid.uuid4().hex}"


class ProvisioningStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROVISIONED = "provisioned", "Provisioned"
    FAILED = "failed", "Failed"


class UserManager(BaseUserManager["User"]):
    """Model-level construction only (what Django's own tooling calls).

    Application code, the admin, allauth's adapters and the management commands create
    users through ``accounts.services.user_create`` / ``user_register``, which also
    schedule provisioning; this module never imports the service layer.
    """

    use_in_migrations = True

    def build_user(self, email: str, password: str | None = None, **extra_fields: Any) -> User:
        """An unsaved user with a normalized e-mail and a hashed (or unusable) password."""
        user = self.model(email=self.normalize_email(email), **extra_fields)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        return user

    def create_user(self, email: str, password: str | None = None, **extra_fields: Any) -> User:
        user = self.build_user(email, password, **extra_fields)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_superuser(
        self, email: str, password: str | None = None, **extra_fields: Any
    ) -> User:
        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        return self.create_user(email, password, **extra_fields)


class User(AbstractUser):
    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)
    external_user_id = models.CharField(
        "pymthouse external user id",
        max_length=128,
        unique=True,
        editable=False,
        default=generate_external_user_id,
        validators=[validate_external_user_id],
        help_text="Immutable key of this user at pymthouse (externalUserId).",
    )
    provisioning_status = models.CharField(
        max_length=16,
        choices=ProvisioningStatus.choices,
        default=ProvisioningStatus.PENDING,
        db_index=True,
    )
    provisioning_error = models.TextField(blank=True, default="")
    provisioning_attempts = models.PositiveIntegerField(default=0)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    pymthouse_user_id = models.UUIDField(
        "pymthouse user id",
        null=True,
        blank=True,
        help_text="pymthouse's internal id (app_users.id); informational only.",
    )
    pymthouse_active = models.BooleanField(
        null=True,
        blank=True,
        help_text="Status last confirmed at pymthouse (None until provisioned).",
    )

    deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when the account was deleted: personal data scrubbed, row and "
        "billing history kept, deactivated at pymthouse.",
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(external_user_id__regex=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
                & ~models.Q(external_user_id__startswith="owner:")
                & ~models.Q(external_user_id__startswith="user:"),
                name="accounts_user_external_user_id_grammar",
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Invariant guard, not business logic: the upstream key is write-once.
        if (
            self.pk is not None
            and not self._state.adding
            and type(self)
            .objects.filter(pk=self.pk)
            .exclude(external_user_id=self.external_user_id)
            .exists()
        ):
            raise ValidationError(
                {"external_user_id": "The pymthouse external user id cannot change."}
            )
        super().save(*args, **kwargs)


#: Personal API keys start with this, so a leaked key is recognisable (secret scanners,
#: logs) and the API can tell one from an OIDC access token without parsing it.
API_KEY_PREFIX = "phk_"
#: How much of a key the lists show (``phk_`` + 8 characters): enough to tell keys apart,
#: far too little to guess the rest (the secret has 256 bits).
API_KEY_VISIBLE_LENGTH = len(API_KEY_PREFIX) + 8
API_KEY_NAME_MAX_LENGTH = 100


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_user(self, user_id: int) -> ApiKeyQuerySet:
        return self.filter(user_id=user_id)


class ApiKey(models.Model):
    """A personal API key: ``Authorization: Bearer phk_…`` on the JSON API.

    Only the SHA-256 of the secret is stored (the secret is 256 random bits, so a plain
    hash is enough: there is nothing to brute-force, unlike a password); the secret is
    shown once, when created. ``prefix`` is its first characters, for the lists. A key
    works while it is not revoked, not expired, and its user is active.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=API_KEY_NAME_MAX_LENGTH)
    prefix = models.CharField(max_length=API_KEY_VISIBLE_LENGTH, editable=False)
    secret_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ("-created_at", "-pk")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(secret_sha256__regex=r"^[0-9a-f]{64}$"),  # noqa: S106
                name="accounts_apikey_secret_sha256_hex",
            ),
            models.CheckConstraint(
                condition=models.Q(prefix__startswith=API_KEY_PREFIX),
                name="accounts_apikey_prefix",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    def is_usable_at(self, moment: datetime) -> bool:
        """Not revoked and not expired at ``moment`` (the user's state is checked apart)."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)


#: Webhook signing secrets start with this (as Stripe's ``whsec_``), so a leaked one is
#: recognisable; the page shows the prefix and 8 more characters.
WEBHOOK_SECRET_PREFIX = "phwhsec_"  # noqa: S105 (a prefix, not a secret)
WEBHOOK_SECRET_VISIBLE_LENGTH = len(WEBHOOK_SECRET_PREFIX) + 8
WEBHOOK_URL_MAX_LENGTH = 2000


class WebhookEndpoint(models.Model):
    """Where an account's completion events are POSTed (one per account).

    The signing secret is needed in the clear to sign each delivery, so it cannot be
    hashed: it is stored encrypted (Fernet, a key derived from ``DJANGO_SECRET_KEY``;
    ``accounts.webhooks``), shown once when made or rotated, never displayed or logged
    again. ``secret_prefix`` is its first characters, for the page.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="webhook_endpoint")
    url = models.URLField(max_length=WEBHOOK_URL_MAX_LENGTH)
    secret_encrypted = models.TextField(editable=False)
    secret_prefix = models.CharField(max_length=WEBHOOK_SECRET_VISIBLE_LENGTH, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    secret_rotated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(secret_prefix__startswith=WEBHOOK_SECRET_PREFIX),
                name="accounts_webhookendpoint_secret_prefix",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.url} ({self.secret_prefix}…)"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint, and how its delivery went (the page's delivery log).

    ``body`` is fixed when the event is made: every attempt sends the same bytes (and
    the same ``id``, which receivers deduplicate on); only the signature's timestamp is
    new per attempt. An event about a generation is made once per type
    (``accounts_webhookdelivery_once_per_subject``).
    """

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=40)
    subject_id = models.CharField(max_length=64, blank=True)
    body = models.TextField()
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("endpoint", "event_type", "subject_id"),
                condition=~models.Q(subject_id=""),
                name="accounts_webhookdelivery_once_per_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} ({self.status})"
