# The usage mirror moved to the usage app (usage/migrations/0001_move_from_billing.py):
# its models leave billing's migration state only. The tables stay where they are and
# keep their names (the usage models set db_table); no row is copied or dropped.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0008_observed_price"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(
                    name="UsageDay",
                ),
                migrations.DeleteModel(
                    name="UsageDrift",
                ),
                migrations.RemoveField(
                    model_name="usagemanifest",
                    name="generation",
                ),
                migrations.RemoveField(
                    model_name="usagemanifest",
                    name="user",
                ),
                migrations.RemoveField(
                    model_name="usagemanifestrevision",
                    name="manifest",
                ),
                migrations.DeleteModel(
                    name="UsageSyncRun",
                ),
                migrations.DeleteModel(
                    name="UsageSyncState",
                ),
                migrations.RemoveField(
                    model_name="usageuseraggregate",
                    name="user",
                ),
                migrations.DeleteModel(
                    name="UsageManifest",
                ),
                migrations.DeleteModel(
                    name="UsageManifestRevision",
                ),
                migrations.DeleteModel(
                    name="UsageUserAggregate",
                ),
            ],
        ),
    ]
