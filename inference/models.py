"""Image generations.

A ``Generation`` is one prompt → one image, paid for on the Livepeer network
with a ticket from pymthouse's remote signer. The runner challenge's
``manifest_id`` (stored when the payment is claimed) joins metered usage back
to it.

Payment invariant: ``payment_claimed_at`` is set by a conditional UPDATE right
before a ticket is requested and only cleared when the signer definitely
refused. A retry or redelivery that finds it set never requests another ticket.
Every write of a run is conditional on ``attempt_id`` (inference.services.transitions).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from billing.fields import WeiField
from inference.failure_codes import FailureCode as FailureCode  # re-exported


class GenerationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class GenerationStage(models.TextChoices):
    """Where a generation is, in the order it gets there; each carries its label and progress.

    The one definition of the stages: the services write them, the model stores them,
    templates and the API show ``label`` and ``progress``, and static/js/generate.js
    receives the table from the server (``GenerationStage.table()``).
    """

    QUEUED = "queued", "Waiting in the queue…"
    RETRYING = "retrying", "The network is busy. Retrying shortly…"
    AUTHORIZING = "authorizing", "Authorizing payment…"
    CONNECTING = "connecting", "Finding a Livepeer runner…"
    PAYING = "paying", "Paying the runner…"
    GENERATING = "generating", "Generating your image…"
    SAVING = "saving", "Saving your image…"
    DONE = "done", "Done"

    @property
    def order(self) -> int:
        return list(GenerationStage).index(self)

    @property
    def progress(self) -> int:
        """Coarse percent shown while a generation is at this stage."""
        return _STAGE_PROGRESS[self]

    @classmethod
    def of(cls, value: str) -> GenerationStage:
        """The stage stored as ``value``; rows written before stages were typed read as queued."""
        try:
            return cls(value)
        except ValueError:
            return cls.QUEUED

    @classmethod
    def table(cls) -> list[dict[str, object]]:
        """Every stage as JSON-ready rows, in order (handed to the JavaScript)."""
        return [
            {"value": stage.value, "label": stage.label, "progress": stage.progress}
            for stage in cls
        ]


_STAGE_PROGRESS: dict[GenerationStage, int] = {
    GenerationStage.QUEUED: 5,
    GenerationStage.RETRYING: 10,
    GenerationStage.AUTHORIZING: 15,
    GenerationStage.CONNECTING: 30,
    GenerationStage.PAYING: 45,
    GenerationStage.GENERATING: 65,
    GenerationStage.SAVING: 90,
    GenerationStage.DONE: 100,
}

FINISHED_STATUSES = frozenset(
    {GenerationStatus.SUCCEEDED, GenerationStatus.FAILED, GenerationStatus.CANCELED}
)


class GenerationQuerySet(models.QuerySet["Generation"]):
    def for_owner(self, owner_id: int) -> GenerationQuerySet:
        return self.filter(owner_id=owner_id)

    def unfinished(self) -> GenerationQuerySet:
        return self.filter(status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING])


#: Stored image formats: content type -> file extension (the extension is how the
#: download view knows the content type to serve).
IMAGE_EXTENSIONS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpg"}
IMAGE_CONTENT_TYPES: dict[str, str] = {ext: ctype for ctype, ext in IMAGE_EXTENSIONS.items()}


def generation_image_path(instance: Generation, filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    if extension not in IMAGE_CONTENT_TYPES:
        extension = "png"
    return f"generations/{instance.owner_id}/{instance.id}.{extension}"


class Generation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations"
    )
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True, default="")
    model_id = models.CharField(max_length=200)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    seed = models.BigIntegerField(null=True, blank=True)

    status = models.CharField(
        max_length=16,
        choices=GenerationStatus.choices,
        default=GenerationStatus.QUEUED,
        db_index=True,
    )
    stage = models.CharField(
        max_length=32, choices=GenerationStage.choices, default=GenerationStage.QUEUED
    )
    error_code = models.CharField(
        max_length=64, choices=FailureCode.choices, blank=True, default=""
    )
    error_message = models.CharField(max_length=500, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    backend = models.CharField(max_length=32, blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    # The attempt (task message id) that owns a running generation: every write of a
    # run is conditional on it, so a late or duplicate attempt changes nothing.
    attempt_id = models.CharField(max_length=64, blank=True, default="")
    # When a message to run it was last sent: reconcile re-sends at most once a window.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Upstream references (never credentials).
    payment_claimed_at = models.DateTimeField(null=True, blank=True)
    tickets_paid = models.PositiveIntegerField(default=0)
    manifest_id = models.CharField(max_length=200, blank=True, default="")
    runner_url = models.URLField(max_length=500, blank=True, default="")
    upstream_request_id = models.CharField(max_length=200, blank=True, default="")

    image = models.FileField(upload_to=generation_image_path, blank=True, default="")
    image_seed = models.BigIntegerField(null=True, blank=True)
    nsfw = models.BooleanField(default=False)

    # The most this image's payment may cost at the network (wei), decided at admission
    # (billing's hold covers it): the signer's maxPrice never exceeds it.
    max_fee_wei = WeiField(null=True, blank=True)

    # What the payment bought, recorded at payment time (PaymentRecord). The
    # expected fee is what billing debits; it never waits for a usage report.
    price_wei = WeiField(null=True, blank=True)
    price_unit = models.CharField(max_length=32, blank=True, default="")
    units_paid = models.PositiveBigIntegerField(null=True, blank=True)
    expected_fee_wei = WeiField(null=True, blank=True)

    # Filled by billing once the usage for this generation is metered.
    cost_wei = WeiField(null=True, blank=True)
    cost_usd_micros = models.BigIntegerField(null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="generation_owner_recent"),
            # The usage mirror joins metered manifest rows to generations by this id.
            models.Index(fields=["manifest_id"], name="generation_manifest_id"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    width__gte=64, width__lte=2048, height__gte=64, height__lte=2048
                ),
                name="generation_size_bounds",
            ),
            models.CheckConstraint(
                condition=models.Q(cost_usd_micros__isnull=True) | models.Q(cost_usd_micros__gte=0),
                name="generation_cost_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def gateway_request_id(self) -> str:
        """Our request id in logs and upstream errors (not an upstream join key)."""
        return str(self.id)

    @property
    def image_content_type(self) -> str:
        """The stored image's content type, from its extension (PNG or JPEG)."""
        extension = (self.image.name or "").rsplit(".", 1)[-1].lower()
        return IMAGE_CONTENT_TYPES.get(extension, "image/png")

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def progress(self) -> int:
        """0-100 for progress bars: 100 once finished, at most 10 while queued."""
        if self.is_finished:
            return 100
        value = GenerationStage.of(self.stage).progress
        return min(value, 10) if self.status == GenerationStatus.QUEUED else value

    @property
    def stage_label(self) -> str:
        return GenerationStage.of(self.stage).label

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def queue_seconds(self) -> float | None:
        if self.started_at:
            return (self.started_at - self.created_at).total_seconds()
        return None


class SubmissionWindow(models.Model):
    """Per-user count of accepted submissions in the current fixed rate-limit window.

    Read and written only under the owner's row lock in the admission step
    (inference.services.admission), so the count is exact on every database and
    does not depend on the cache backend's atomicity.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", primary_key=True
    )
    window = models.BigIntegerField(default=0, help_text="Unix time // window length")
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.count} in window {self.window}"


class AdmittedImage(models.Model):
    """Append-only record of every admitted generation: what the monthly allowance and
    the subscription cap count (``inference.selectors.generations_counted_this_month``).

    Written in the admission transaction, never deleted with its generation (no foreign
    key to it), so deleting images gives no allowance back. ``counts`` turns False in the
    transaction that ends a generation without paying anything. A generation deleted
    while its paid outcome was unknown keeps its ``manifest_id`` here with
    ``paid_outcome_unknown``: the usage mirror can still join its metered row and charge
    it, and the stale-hold sweep waits for that instead of releasing the hold.
    """

    generation_id = models.UUIDField(unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    admitted_at = models.DateTimeField(db_index=True)
    counts = models.BooleanField(default=True)
    manifest_id = models.CharField(max_length=200, blank=True, default="")
    paid_outcome_unknown = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-admitted_at",)
        indexes = [
            models.Index(fields=["owner", "admitted_at"], name="admitted_owner_month"),
            models.Index(
                fields=["manifest_id"],
                condition=models.Q(paid_outcome_unknown=True),
                name="admitted_deleted_unknown",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.generation_id} admitted {self.admitted_at:%Y-%m-%d}"


class IdempotentRequestStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"


class IdempotentRequest(models.Model):
    """One ``Idempotency-Key`` of one user on ``POST /generations`` (Stripe's semantics).

    ``fingerprint`` is the SHA-256 of the request as the service saw it; ``claim`` names
    the request that is executing it (in progress) and is what its completion is
    conditional on; once completed, ``response_status``/``response_body`` are what every
    repeat of the request is answered with, until the key expires (24 h;
    ``inference.services.idempotency``).
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=IdempotentRequestStatus.choices)
    claim = models.UUIDField()
    claimed_at = models.DateTimeField()
    created_at = models.DateTimeField(db_index=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "key"], name="inference_idempotent_request_key"
            ),
            models.CheckConstraint(
                condition=models.Q(status="in_progress", response_status__isnull=True)
                | models.Q(status="completed", response_status__isnull=False),
                name="inference_idempotent_request_completed_has_response",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.key} ({self.status})"
