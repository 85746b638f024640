"""Promotional credit (issue 14): the ``promotion`` and ``promotion_expiry`` ledger kinds,
the lots they open and close (``PromotionalCredit``), and the low-balance mail state
(``Account.low_balance_notified_micros``).

Data step: **existing staff grants stay purchased credit** (kind ``grant``, no lot): they
never expire and keep their place after any new promotional credit, because an operator
who typed them may have been paid for them outside the product, and nobody was told they
were promotional. Only the demo seed's credit (key ``grant:demo-credit:<user>``) becomes
promotional, without expiry: its lot's remaining is what the account's debits since the
grant left of it, spending it first as the new rule does.

SQLite rebuilds the ledger table to change its CHECK constraint, which drops the
append-only trigger of 0002: it is recreated here (as 0013 does).
"""

from typing import Any

import billing.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from billing.migrations._append_only import sqlite_trigger_recreate


def demo_credit_to_promotional(apps: Any, schema_editor: Any) -> None:
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    PromotionalCredit = apps.get_model("billing", "PromotionalCredit")
    grants = LedgerEntry.objects.filter(
        kind="grant", effect="credit", idempotency_key__startswith="grant:demo-credit:"
    )
    for grant in grants:
        remaining = grant.amount_micros
        later_debits = LedgerEntry.objects.filter(
            account_id=grant.account_id, effect="debit", pk__gt=grant.pk
        ).order_by("pk")
        for debit in later_debits.values_list("amount_micros", flat=True):
            remaining -= min(remaining, debit)
        PromotionalCredit.objects.create(
            account_id=grant.account_id,
            entry_id=grant.pk,
            amount_micros=grant.amount_micros,
            remaining_micros=remaining,
            expires_at=None,
            closed_at=None if remaining else timezone.now(),
        )


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0014_account_pending_plan'),
        ('inference', '0008_admitted_image_record'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PromotionalCredit',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('amount_micros', billing.fields.WeiAmountField()),
                ('remaining_micros', billing.fields.WeiAmountField()),
                ('expires_at', models.DateTimeField(blank=True, db_index=True, null=True)),
                ('closed_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'verbose_name_plural': 'promotional credit',
                'ordering': ('-created_at', '-id'),
            },
        ),
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='billing_ledger_kind_effect',
        ),
        migrations.AddField(
            model_name='account',
            name='low_balance_notified_micros',
            field=billing.fields.WeiField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund'), ('promotion', 'Promotional credit'), ('promotion_expiry', 'Promotional credit expired')], max_length=20),
        ),
        migrations.AlterField(
            model_name='ledgerrejection',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund'), ('promotion', 'Promotional credit'), ('promotion_expiry', 'Promotional credit expired')], max_length=20),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('effect__in', ('credit',)), ('kind', 'grant')), models.Q(('effect__in', ('debit',)), ('kind', 'deduct')), models.Q(('effect__in', ('hold',)), ('kind', 'hold')), models.Q(('effect__in', ('release',)), ('kind', 'hold_release')), models.Q(('effect__in', ('debit',)), ('kind', 'usage_debit')), models.Q(('effect__in', ('record',)), ('kind', 'subscription_fee')), models.Q(('effect__in', ('credit', 'debit')), ('kind', 'correction')), models.Q(('effect__in', ('credit',)), ('kind', 'refund')), models.Q(('effect__in', ('credit',)), ('kind', 'promotion')), models.Q(('effect__in', ('debit',)), ('kind', 'promotion_expiry')), _connector='OR'), name='billing_ledger_kind_effect'),
        ),
        migrations.AddField(
            model_name='promotionalcredit',
            name='account',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='promotions', to='billing.account'),
        ),
        migrations.AddField(
            model_name='promotionalcredit',
            name='entry',
            field=models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='promotional_credit', to='billing.ledgerentry'),
        ),
        migrations.AddField(
            model_name='promotionalcredit',
            name='expiry_entry',
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='expired_promotional_credit', to='billing.ledgerentry'),
        ),
        migrations.AddIndex(
            model_name='promotionalcredit',
            index=models.Index(condition=models.Q(('closed_at__isnull', True)), fields=['expires_at'], name='billing_promo_open_expiry'),
        ),
        migrations.AddConstraint(
            model_name='promotionalcredit',
            constraint=models.CheckConstraint(condition=models.Q(('remaining_micros__gte', 0), ('remaining_micros__lte', models.F('amount_micros'))), name='billing_promo_remaining_within_amount'),
        ),
        migrations.RunPython(sqlite_trigger_recreate, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(demo_credit_to_promotional, migrations.RunPython.noop, elidable=False),
    ]
