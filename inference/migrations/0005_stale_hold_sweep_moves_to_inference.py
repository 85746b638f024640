# The stale-hold sweep's decisions moved from billing to inference
# (inference.services.reconcile.holds_resolve_stale): its beat entry, seeded before the
# move, names the moved task. Data only; no schema change.

from django.db import migrations

OLD = "billing.tasks.holds_resolve_stale_task"
NEW = "inference.tasks.holds_resolve_stale_task"


def schedule_follows(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=OLD).update(task=NEW)


def schedule_back(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=NEW).update(task=OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0004_generation_manifest_index"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule_follows, schedule_back)]
