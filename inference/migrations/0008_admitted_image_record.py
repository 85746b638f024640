"""The append-only admission record (issue 13): allowances count it, not live rows.

Backfilled from every existing generation exactly as the count worked before (a row
counts unless it ended failed or canceled without a payment claim), so no user's
allowance changes with this migration.
"""

from typing import Any

from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion

ENDED_WITHOUT_PAYING = ("failed", "canceled")


def backfill(apps: Any, schema_editor: Any) -> None:
    Generation = apps.get_model("inference", "Generation")
    AdmittedImage = apps.get_model("inference", "AdmittedImage")
    rows = Generation.objects.order_by("pk").values_list(
        "pk", "owner_id", "created_at", "status", "payment_claimed_at"
    )
    batch = []
    for pk, owner_id, created_at, status, claimed_at in rows.iterator(chunk_size=2000):
        batch.append(
            AdmittedImage(
                generation_id=pk,
                owner_id=owner_id,
                admitted_at=created_at,
                counts=not (status in ENDED_WITHOUT_PAYING and claimed_at is None),
            )
        )
        if len(batch) >= 2000:
            AdmittedImage.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    AdmittedImage.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0007_generation_error_code_choices'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AdmittedImage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('generation_id', models.UUIDField(unique=True)),
                ('admitted_at', models.DateTimeField(db_index=True)),
                ('counts', models.BooleanField(default=True)),
                ('manifest_id', models.CharField(blank=True, default='', max_length=200)),
                ('paid_outcome_unknown', models.BooleanField(default=False)),
                ('deleted_at', models.DateTimeField(blank=True, null=True)),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ('-admitted_at',),
                'indexes': [models.Index(fields=['owner', 'admitted_at'], name='admitted_owner_month'), models.Index(condition=models.Q(('paid_outcome_unknown', True)), fields=['manifest_id'], name='admitted_deleted_unknown')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
