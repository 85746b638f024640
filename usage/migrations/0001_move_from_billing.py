# The usage mirror moves here from billing (billing/migrations/0009_...): model state
# only; the tables keep their names (db_table) and their rows.

import billing.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MODELS = (
    "usageday",
    "usagedrift",
    "usagemanifest",
    "usagemanifestrevision",
    "usagesyncrun",
    "usagesyncstate",
    "usageuseraggregate",
)


def content_types_follow(apps, schema_editor):
    """Existing databases: the models' content types (and so their permissions, and any
    group holding them) move with the models instead of being created anew."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label="usage", model=model).exists():
            ContentType.objects.filter(app_label="billing", model=model).update(app_label="usage")


def content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="usage", model__in=MODELS).update(app_label="billing")


def schedule_follows(apps, schema_editor):
    """The sync's beat entry (seeded by billing before the move) names the moved task."""
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if not PeriodicTask.objects.filter(name="usage-sync").exists():
        PeriodicTask.objects.filter(name="billing-usage-sync").update(name="usage-sync")
    PeriodicTask.objects.filter(task="billing.tasks.usage_sync_task").update(
        task="usage.tasks.usage_sync_task"
    )


def schedule_back(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name="usage-sync").update(name="billing-usage-sync")
    PeriodicTask.objects.filter(task="usage.tasks.usage_sync_task").update(
        task="billing.tasks.usage_sync_task"
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("billing", "0009_usage_mirror_moves_to_usage_app"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("inference", "0004_generation_manifest_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="UsageDay",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("day", models.DateField(unique=True)),
                        ("fee_wei", billing.fields.WeiField(default=0)),
                        ("network_fee_usd_micros", billing.fields.WeiField(default=0)),
                        ("manifest_count", models.PositiveIntegerField(default=0)),
                    ],
                    options={
                        "db_table": "billing_usageday",
                    },
                ),
                migrations.CreateModel(
                    name="UsageSyncRun",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("started_at", models.DateTimeField(db_index=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("never", "Never run"),
                                    ("ok", "OK"),
                                    (
                                        "partial",
                                        "Interrupted (committed users kept; re-run completes it)",
                                    ),
                                    ("skipped", "Skipped (another run holds the lease)"),
                                    ("unconfigured", "Metering not configured upstream (503)"),
                                    ("bad_credentials", "Credentials rejected (404)"),
                                    ("timeout", "Timed out"),
                                    ("unavailable", "Upstream unavailable"),
                                    ("error", "Unexpected upstream answer"),
                                ],
                                max_length=20,
                            ),
                        ),
                        ("detail", models.CharField(blank=True, default="", max_length=300)),
                        ("window_start", models.DateTimeField(blank=True, null=True)),
                        ("window_end", models.DateTimeField(blank=True, null=True)),
                        ("users_seen", models.PositiveIntegerField(default=0)),
                        ("users_changed", models.PositiveIntegerField(default=0)),
                        ("manifests_new", models.PositiveIntegerField(default=0)),
                        ("revisions_new", models.PositiveIntegerField(default=0)),
                        ("settled", models.PositiveIntegerField(default=0)),
                        ("duration_ms", models.PositiveIntegerField(default=0)),
                    ],
                    options={
                        "db_table": "billing_usagesyncrun",
                        "ordering": ("-started_at",),
                    },
                ),
                migrations.CreateModel(
                    name="UsageSyncState",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("never", "Never run"),
                                    ("ok", "OK"),
                                    (
                                        "partial",
                                        "Interrupted (committed users kept; re-run completes it)",
                                    ),
                                    ("skipped", "Skipped (another run holds the lease)"),
                                    ("unconfigured", "Metering not configured upstream (503)"),
                                    ("bad_credentials", "Credentials rejected (404)"),
                                    ("timeout", "Timed out"),
                                    ("unavailable", "Upstream unavailable"),
                                    ("error", "Unexpected upstream answer"),
                                ],
                                default="never",
                                max_length=20,
                            ),
                        ),
                        ("detail", models.CharField(blank=True, default="", max_length=300)),
                        ("lease_token", models.CharField(blank=True, default="", max_length=32)),
                        ("lease_until", models.DateTimeField(blank=True, null=True)),
                        ("last_started_at", models.DateTimeField(blank=True, null=True)),
                        ("last_finished_at", models.DateTimeField(blank=True, null=True)),
                        ("last_success_at", models.DateTimeField(blank=True, null=True)),
                        ("watermark", models.DateTimeField(blank=True, null=True)),
                        (
                            "upstream_fingerprint",
                            models.CharField(blank=True, default="", max_length=64),
                        ),
                        ("user_count", models.PositiveIntegerField(default=0)),
                        ("request_count", models.PositiveBigIntegerField(default=0)),
                        ("network_fee_usd_micros", billing.fields.WeiField(default=0)),
                        ("fee_wei", billing.fields.WeiField(default=0)),
                        ("flagged_revisions", models.PositiveIntegerField(default=0)),
                        ("drift_alerts", models.PositiveIntegerField(default=0)),
                        ("ledger_mark_id", models.BigIntegerField(blank=True, null=True)),
                        ("ledger_mark_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "verbose_name": "usage sync state",
                        "db_table": "billing_usagesyncstate",
                        "permissions": [
                            ("view_staff_billing", "Can view every user's usage on /staff/billing/")
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageDrift",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("external_user_id", models.CharField(max_length=128)),
                        ("day", models.DateField()),
                        ("local_debit_wei", billing.fields.WeiField(default=0)),
                        ("metered_fee_wei", billing.fields.WeiField(default=0)),
                        ("alert", models.BooleanField(default=False)),
                        ("computed_at", models.DateTimeField()),
                    ],
                    options={
                        "db_table": "billing_usagedrift",
                        "indexes": [
                            models.Index(
                                fields=["-day", "external_user_id"], name="usage_drift_day"
                            ),
                            models.Index(
                                fields=["alert", "-day", "external_user_id"],
                                name="usage_drift_alerts",
                            ),
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("external_user_id", "day"), name="usage_drift_key"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageManifest",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("external_user_id", models.CharField(max_length=128)),
                        ("manifest_id", models.CharField(max_length=200)),
                        ("fee_wei", billing.fields.WeiField()),
                        ("network_fee_usd_micros", billing.fields.WeiField()),
                        ("pipeline", models.CharField(blank=True, default="", max_length=100)),
                        ("model_id", models.CharField(blank=True, default="", max_length=200)),
                        ("day", models.DateField()),
                        ("first_seen_at", models.DateTimeField()),
                        ("flagged", models.BooleanField(default=False)),
                        (
                            "generation",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="usage_rows",
                                to="inference.generation",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_usagemanifest",
                    },
                ),
                migrations.CreateModel(
                    name="UsageManifestRevision",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("fee_wei", billing.fields.WeiField()),
                        ("network_fee_usd_micros", billing.fields.WeiField()),
                        ("seen_at", models.DateTimeField()),
                        (
                            "manifest",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="revisions",
                                to="usage.usagemanifest",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_usagemanifestrevision",
                    },
                ),
                migrations.CreateModel(
                    name="UsageUserAggregate",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("external_user_id", models.CharField(max_length=128, unique=True)),
                        ("request_count", models.PositiveBigIntegerField(default=0)),
                        ("network_fee_usd_micros", billing.fields.WeiField(default=0)),
                        ("fee_wei", billing.fields.WeiField(default=0)),
                        ("manifest_count", models.PositiveIntegerField(default=0)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("synced_at", models.DateTimeField()),
                        ("email", models.CharField(blank=True, default="", max_length=254)),
                        ("search_user", models.CharField(blank=True, default="", max_length=128)),
                        ("search_email", models.CharField(blank=True, default="", max_length=254)),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_usageuseraggregate",
                    },
                ),
                migrations.AddIndex(
                    model_name="usagemanifest",
                    index=models.Index(fields=["manifest_id"], name="usage_manifest_id"),
                ),
                migrations.AddIndex(
                    model_name="usagemanifest",
                    index=models.Index(
                        fields=["external_user_id", "day"], name="usage_manifest_user_day"
                    ),
                ),
                migrations.AddIndex(
                    model_name="usagemanifest",
                    index=models.Index(fields=["day"], name="usage_manifest_day"),
                ),
                migrations.AddIndex(
                    model_name="usagemanifest",
                    index=models.Index(
                        condition=models.Q(("flagged", True)),
                        fields=["-first_seen_at"],
                        name="usage_manifest_flagged",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="usagemanifest",
                    constraint=models.UniqueConstraint(
                        fields=("external_user_id", "manifest_id"),
                        name="usage_manifest_natural_key",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="usagemanifestrevision",
                    constraint=models.UniqueConstraint(
                        fields=("manifest", "fee_wei", "network_fee_usd_micros"),
                        name="usage_revision_once_per_amount",
                    ),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(fields=["email", "id"], name="usage_agg_email"),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(
                        fields=["search_user"],
                        name="usage_agg_q_user",
                        opclasses=["varchar_pattern_ops"],
                    ),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(
                        fields=["search_email"],
                        name="usage_agg_q_email",
                        opclasses=["varchar_pattern_ops"],
                    ),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(fields=["-request_count", "-id"], name="usage_agg_requests"),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(
                        fields=["-network_fee_usd_micros", "-id"], name="usage_agg_usd"
                    ),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(fields=["-fee_wei", "-id"], name="usage_agg_wei"),
                ),
                migrations.AddIndex(
                    model_name="usageuseraggregate",
                    index=models.Index(fields=["-last_used_at", "-id"], name="usage_agg_last_used"),
                ),
            ],
        ),
        migrations.RunPython(content_types_follow, content_types_back),
        migrations.RunPython(schedule_follows, schedule_back),
    ]
