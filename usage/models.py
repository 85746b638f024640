"""The usage mirror: what pymthouse metered, copied exactly, and how it compares to our ledger.

pymthouse's Builder usage API (pymthouse-api.md §7.1) reports per user aggregates in USD
micros (``groupBy=user``) and per manifest the fee in wei (``groupBy=manifest&userId=``).
Both are mirrored here by ``usage.services.sync``; nothing else writes these
tables. Amounts are exact integers: wei and USD micros are ``WeiField`` (NUMERIC(78,0) on
Postgres), so an upstream value up to 2**256-1 is stored, never rounded or refused by an
overflowing column.

The tables keep the names they had when the mirror lived in the billing app
(``db_table``): the move to this app changed model state only, no row was copied
(``usage/migrations/0001_move_from_billing.py``).

Natural keys: one ``UsageUserAggregate`` per ``external_user_id``; one ``UsageManifest``
per ``(external_user_id, manifest_id)``; one ``UsageManifestRevision`` per distinct
amount seen again for a manifest; one ``UsageDrift`` per ``(external_user_id, day)``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from billing.fields import SignedAmountField, WeiField


class UsageSyncStatus(models.TextChoices):
    NEVER = "never", "Never run"
    OK = "ok", "OK"
    PARTIAL = "partial", "Interrupted (committed users kept; re-run completes it)"
    SKIPPED = "skipped", "Skipped (another run holds the lease)"
    UNCONFIGURED = "unconfigured", "Metering not configured upstream (503)"
    BAD_CREDENTIALS = "bad_credentials", "Credentials rejected (404)"
    TIMEOUT = "timeout", "Timed out"
    UNAVAILABLE = "unavailable", "Upstream unavailable"
    ERROR = "error", "Unexpected upstream answer"


class UsageSyncState(models.Model):
    """The one sync-state row (pk=1): lease, watermark, last outcome, precomputed totals.

    ``watermark`` is the end of the last window whose rows are committed; it is written in
    the final transaction of a successful run and never moves backwards.
    """

    SINGLETON_ID = 1

    status = models.CharField(
        max_length=20, choices=UsageSyncStatus.choices, default=UsageSyncStatus.NEVER
    )
    detail = models.CharField(max_length=300, blank=True, default="")
    lease_token = models.CharField(max_length=32, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    watermark = models.DateTimeField(null=True, blank=True)
    # sha256 of the groupBy=user answer the last successful run applied in full: an
    # identical answer means nothing changed, and the run skips reading 100k aggregates.
    upstream_fingerprint = models.CharField(max_length=64, blank=True, default="")
    # Totals for the staff dashboard, refreshed by each run that changed something.
    user_count = models.PositiveIntegerField(default=0)
    request_count = models.PositiveBigIntegerField(default=0)
    network_fee_usd_micros = WeiField(default=0)
    fee_wei = WeiField(default=0)
    flagged_revisions = models.PositiveIntegerField(default=0)
    drift_alerts = models.PositiveIntegerField(default=0)
    # Rows kept in ``UsageQuarantine`` (poison rows and conflicts), for the staff page.
    quarantined = models.PositiveIntegerField(default=0)
    # Highest ledger entry id seen by the last drift re-check, and when it was first seen:
    # a run skips the re-check of recent debits while no entry was written since (see
    # ``usage_sync._refresh_local_drift``).
    ledger_mark_id = models.BigIntegerField(null=True, blank=True)
    ledger_mark_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "billing_usagesyncstate"
        # Required by /staff/billing/ and its CSV (every user's e-mail and spend), on top
        # of is_staff: grant it to a group, not to every staff account.
        permissions = [("view_staff_billing", "Can view every user's usage on /staff/billing/")]
        verbose_name = "usage sync state"

    def __str__(self) -> str:
        return f"usage sync: {self.status}"


class UsageSyncRun(models.Model):
    """One attempt, whatever its outcome (503, 404 and timeouts are recorded, not raised)."""

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=UsageSyncStatus.choices)
    detail = models.CharField(max_length=300, blank=True, default="")
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    users_seen = models.PositiveIntegerField(default=0)
    users_changed = models.PositiveIntegerField(default=0)
    manifests_new = models.PositiveIntegerField(default=0)
    revisions_new = models.PositiveIntegerField(default=0)
    settled = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "billing_usagesyncrun"
        ordering = ("-started_at",)

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"


class UsageUserAggregate(models.Model):
    """pymthouse's ``byUser[]`` row for one end user, plus the mirror's own rollups.

    ``request_count`` counts signed tickets (pymthouse's meter), not images.
    ``fee_wei`` and ``manifest_count`` sum this user's accepted ``UsageManifest`` rows.
    ``last_used_at`` is when the mirror first saw the aggregate grow (within one sync).
    """

    external_user_id = models.CharField(max_length=128, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    request_count = models.PositiveBigIntegerField(default=0)
    network_fee_usd_micros = WeiField(default=0)
    fee_wei = WeiField(default=0)
    manifest_count = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField()
    # The user's email, denormalised so the staff table sorts and searches one table;
    # kept current by the sync and by the e-mail-change hook (``usage.services.search``).
    email = models.CharField(max_length=254, blank=True, default="")
    # Lower-cased copies for the case-insensitive prefix search (pattern-ops indexes).
    search_user = models.CharField(max_length=128, blank=True, default="")
    search_email = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        db_table = "billing_usageuseraggregate"
        # One index per sort of the staff table, with the id tie-breaker the pages use,
        # so a page is an index range scan even when most users share a value.
        indexes = [
            models.Index(fields=["email", "id"], name="usage_agg_email"),
            # ``varchar_pattern_ops`` lets PostgreSQL serve ``LIKE 'prefix%'`` from the
            # index under any collation; other databases ignore opclasses.
            models.Index(
                fields=["search_user"], opclasses=["varchar_pattern_ops"], name="usage_agg_q_user"
            ),
            models.Index(
                fields=["search_email"],
                opclasses=["varchar_pattern_ops"],
                name="usage_agg_q_email",
            ),
            models.Index(fields=["-request_count", "-id"], name="usage_agg_requests"),
            models.Index(fields=["-network_fee_usd_micros", "-id"], name="usage_agg_usd"),
            models.Index(fields=["-fee_wei", "-id"], name="usage_agg_wei"),
            models.Index(fields=["-last_used_at", "-id"], name="usage_agg_last_used"),
        ]

    def __str__(self) -> str:
        return self.external_user_id


class UsageManifest(models.Model):
    """One ``byManifest[]`` row: the metered fee in wei of one payment session.

    The first amount seen is kept; a different amount seen later is a
    ``UsageManifestRevision`` and sets ``flagged`` (staff resolve it, nothing is
    overwritten). ``generation`` is joined by ``Generation.manifest_id`` (same owner only);
    ``day`` is that generation's UTC day, else the day the mirror first saw the row.
    """

    external_user_id = models.CharField(max_length=128)
    manifest_id = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    generation = models.ForeignKey(
        "inference.Generation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_rows",
    )
    fee_wei = WeiField()
    network_fee_usd_micros = WeiField()
    pipeline = models.CharField(max_length=100, blank=True, default="")
    model_id = models.CharField(max_length=200, blank=True, default="")
    day = models.DateField()
    first_seen_at = models.DateTimeField()
    flagged = models.BooleanField(default=False)

    class Meta:
        db_table = "billing_usagemanifest"
        constraints = [
            models.UniqueConstraint(
                fields=["external_user_id", "manifest_id"], name="usage_manifest_natural_key"
            )
        ]
        indexes = [
            models.Index(fields=["manifest_id"], name="usage_manifest_id"),
            models.Index(fields=["external_user_id", "day"], name="usage_manifest_user_day"),
            models.Index(fields=["day"], name="usage_manifest_day"),
            models.Index(
                fields=["-first_seen_at"],
                condition=models.Q(flagged=True),
                name="usage_manifest_flagged",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_user_id}/{self.manifest_id}"


class UsageManifestRevision(models.Model):
    """A manifest row read again with a different amount: recorded and flagged, not applied."""

    manifest = models.ForeignKey(UsageManifest, on_delete=models.CASCADE, related_name="revisions")
    fee_wei = WeiField()
    network_fee_usd_micros = WeiField()
    seen_at = models.DateTimeField()

    class Meta:
        db_table = "billing_usagemanifestrevision"
        constraints = [
            models.UniqueConstraint(
                fields=["manifest", "fee_wei", "network_fee_usd_micros"],
                name="usage_revision_once_per_amount",
            )
        ]

    def __str__(self) -> str:
        return f"{self.manifest} -> {self.fee_wei}"


class UsageDay(models.Model):
    """Metered totals per UTC day (accepted manifest rows), kept by the sync for the chart."""

    day = models.DateField(unique=True)
    fee_wei = WeiField(default=0)
    network_fee_usd_micros = WeiField(default=0)
    manifest_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "billing_usageday"

    def __str__(self) -> str:
        return f"{self.day}: {self.fee_wei} wei"


class UsageDrift(models.Model):
    """Per user and UTC day: what our charges recorded vs what the network metered.

    ``local_debit_wei``/``local_usd_micros``: the network fee our usage debits recorded and
    what they converted it to (each debit's wei × its ``eth_usd_rate``, before the plan
    multiplier, rounded up once per user-day). ``metered_fee_wei``/``metered_usd_micros``:
    Σ ``feeWei`` and Σ ``networkFeeUsdMicros`` of that user-day's manifests. The USD
    difference splits into ``fee_diff_wei`` (metered − local wei: the network charged
    other wei) and ``rate_diff_usd_micros`` (what is left: the same wei at pymthouse's rate
    instead of ours); ``usage.services.plan.drift_figures`` has the formulas.

    ``alert`` is set when a charge was expected that day (the user had an image admitted
    with a hold) and the metered wei exceeds the local debits by more than
    ``BILLING_DRIFT_ALERT_WEI`` (we charged less than the network cost us). Metered fees
    on a day without holds (plans that include images) are the operator's cost: shown,
    not alerts.
    """

    external_user_id = models.CharField(max_length=128)
    day = models.DateField()
    local_debit_wei = WeiField(default=0)
    metered_fee_wei = WeiField(default=0)
    local_usd_micros = WeiField(default=0)
    metered_usd_micros = WeiField(default=0)
    fee_diff_wei = SignedAmountField(default=0)
    rate_diff_usd_micros = SignedAmountField(default=0)
    alert = models.BooleanField(default=False)
    computed_at = models.DateTimeField()

    class Meta:
        db_table = "billing_usagedrift"
        constraints = [
            models.UniqueConstraint(fields=["external_user_id", "day"], name="usage_drift_key")
        ]
        indexes = [
            models.Index(fields=["-day", "external_user_id"], name="usage_drift_day"),
            models.Index(fields=["alert", "-day", "external_user_id"], name="usage_drift_alerts"),
        ]

    def __str__(self) -> str:
        return f"{self.external_user_id} {self.day}"

    @property
    def margin_wei(self) -> int:
        return (self.local_debit_wei or 0) - (self.metered_fee_wei or 0)


class UsageQuarantineKind(models.TextChoices):
    USER_ROW = "user_row", "User row the mirror cannot hold"
    MANIFEST_ROW = "manifest_row", "Manifest row the mirror cannot hold"
    CONFLICT = "conflict", "Manifest listed twice with different amounts"


class UsageQuarantine(models.Model):
    """A usage row kept out of the mirror, as received (``usage.services.plan``).

    A row the id rule refuses or the columns cannot hold, or a manifest one answer lists
    with different amounts (never applied, never charged). The rest of the answer is
    applied; staff see these rows on ``/staff/billing/``. ``key`` is the sha256 of the kind
    and the raw row: the same row seen again bumps ``times_seen`` and ``last_seen_at``.
    """

    key = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=20, choices=UsageQuarantineKind.choices)
    external_user_id = models.TextField()
    manifest_id = models.TextField(blank=True, default="")
    reason = models.CharField(max_length=300)
    raw = models.TextField()
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    times_seen = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["-last_seen_at"], name="usage_quarantine_recent")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.external_user_id[:40]} {self.manifest_id[:40]}"
