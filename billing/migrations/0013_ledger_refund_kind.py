"""The ``refund`` ledger kind (effect credit): the charge of an image the network did
not deliver, credited back (issue 13). SQLite rebuilds the ledger table to change the
CHECK constraint, which drops the append-only trigger of 0002: it is recreated here."""

from django.conf import settings
from django.db import migrations, models

from billing.migrations._append_only import sqlite_trigger_recreate


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0012_usd_micros'),
        ('inference', '0008_admitted_image_record'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='billing_ledger_kind_effect',
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund')], max_length=20),
        ),
        migrations.AlterField(
            model_name='ledgerrejection',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund')], max_length=20),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('effect__in', ('credit',)), ('kind', 'grant')), models.Q(('effect__in', ('debit',)), ('kind', 'deduct')), models.Q(('effect__in', ('hold',)), ('kind', 'hold')), models.Q(('effect__in', ('release',)), ('kind', 'hold_release')), models.Q(('effect__in', ('debit',)), ('kind', 'usage_debit')), models.Q(('effect__in', ('record',)), ('kind', 'subscription_fee')), models.Q(('effect__in', ('credit', 'debit')), ('kind', 'correction')), models.Q(('effect__in', ('credit',)), ('kind', 'refund')), _connector='OR'), name='billing_ledger_kind_effect'),
        ),
        migrations.RunPython(sqlite_trigger_recreate, migrations.RunPython.noop, elidable=False),
    ]
