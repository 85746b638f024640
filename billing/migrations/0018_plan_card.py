"""Plan payments by card: a Payment's plan and renewal period, one renewal per period,
and ``payment_reversal`` may be a record (a reversed subscription payment takes back no
credit). SQLite rebuilds the ledger table to change its CHECK constraint, which drops the
append-only trigger of 0002: it is recreated here (as in 0013 and 0017)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from billing.migrations._append_only import sqlite_trigger_recreate


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0017_stripe_payments'),
        ('inference', '0009_idempotency_keys'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='billing_ledger_kind_effect',
        ),
        migrations.AddField(
            model_name='payment',
            name='plan',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.plan'),
        ),
        migrations.AddField(
            model_name='payment',
            name='renews_period_end',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='payment',
            name='purpose',
            field=models.CharField(choices=[('purchase', 'Add credit'), ('auto_topup', 'Auto top-up'), ('subscription', 'Subscription'), ('renewal', 'Subscription renewal')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('effect__in', ('credit',)), ('kind', 'grant')), models.Q(('effect__in', ('debit',)), ('kind', 'deduct')), models.Q(('effect__in', ('hold',)), ('kind', 'hold')), models.Q(('effect__in', ('release',)), ('kind', 'hold_release')), models.Q(('effect__in', ('debit',)), ('kind', 'usage_debit')), models.Q(('effect__in', ('record',)), ('kind', 'subscription_fee')), models.Q(('effect__in', ('credit', 'debit')), ('kind', 'correction')), models.Q(('effect__in', ('credit',)), ('kind', 'refund')), models.Q(('effect__in', ('credit',)), ('kind', 'purchase')), models.Q(('effect__in', ('debit', 'record')), ('kind', 'payment_reversal')), models.Q(('effect__in', ('credit',)), ('kind', 'wallet_credit')), models.Q(('effect__in', ('debit',)), ('kind', 'wallet_debit')), models.Q(('effect__in', ('credit',)), ('kind', 'promotion')), models.Q(('effect__in', ('debit',)), ('kind', 'promotion_expiry')), _connector='OR'), name='billing_ledger_kind_effect'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.UniqueConstraint(condition=models.Q(('purpose', 'renewal')), fields=('account', 'renews_period_end'), name='billing_payment_one_renewal_per_period'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('plan__isnull', False), ('purpose__in', ('subscription', 'renewal'))), models.Q(models.Q(('purpose__in', ('subscription', 'renewal')), _negated=True), ('plan__isnull', True)), _connector='OR'), name='billing_payment_plan_iff_plan_purpose'),
        ),
        migrations.RunPython(sqlite_trigger_recreate, migrations.RunPython.noop, elidable=False),
    ]
