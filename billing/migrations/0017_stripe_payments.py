"""Card payments through the operator's Stripe (issue 14): the ``purchase`` (credit) and
``payment_reversal`` (debit) ledger kinds, the Stripe customer with its saved card and
auto top-up, one ``Payment`` per PaymentIntent attempt (at most one auto top-up in
flight per account, a partial unique constraint) and the processed-event log. SQLite
rebuilds the ledger table to change the CHECK constraint, which drops the append-only
trigger of 0002: it is recreated here (as in 0013)."""

import billing.fields
import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models



from billing.migrations._append_only import sqlite_trigger_recreate


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0016_merchant_wallet'),
        ('inference', '0008_admitted_image_record'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Payment',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('purpose', models.CharField(choices=[('purchase', 'Add credit'), ('auto_topup', 'Auto top-up')], max_length=16)),
                ('amount_micros', billing.fields.WeiAmountField()),
                ('request_key', models.CharField(max_length=64, unique=True)),
                ('payment_intent_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                ('status', models.CharField(choices=[('created', 'Created'), ('submitted', 'Sent to Stripe'), ('requires_action', 'Waiting for the bank (3-D Secure)'), ('processing', 'Processing'), ('succeeded', 'Paid'), ('failed', 'Failed')], default='created', max_length=16)),
                ('failure_message', models.CharField(blank=True, default='', max_length=300)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ('-created_at',),
            },
        ),
        migrations.CreateModel(
            name='StripeCustomer',
            fields=[
                ('account', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, primary_key=True, related_name='stripe_customer', serialize=False, to='billing.account')),
                ('customer_id', models.CharField(max_length=255, unique=True)),
                ('payment_method_id', models.CharField(blank=True, default='', max_length=255)),
                ('card_brand', models.CharField(blank=True, default='', max_length=32)),
                ('card_last4', models.CharField(blank=True, default='', max_length=4)),
                ('card_exp_month', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('card_exp_year', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('auto_topup_enabled', models.BooleanField(default=False)),
                ('auto_topup_threshold_micros', billing.fields.WeiAmountField(default=0)),
                ('auto_topup_amount_micros', billing.fields.WeiAmountField(default=0)),
                ('auto_topup_error', models.CharField(blank=True, default='', max_length=300)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name='StripeEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_id', models.CharField(max_length=255, unique=True)),
                ('type', models.CharField(max_length=100)),
                ('outcome', models.CharField(max_length=200)),
                ('processed_at', models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='billing_ledger_kind_effect',
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund'), ('purchase', 'Card purchase'), ('payment_reversal', 'Card payment reversed'), ('wallet_credit', 'pymthouse wallet credit'), ('wallet_debit', 'pymthouse wallet usage'), ('promotion', 'Promotional credit'), ('promotion_expiry', 'Promotional credit expired')], max_length=20),
        ),
        migrations.AlterField(
            model_name='ledgerrejection',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('deduct', 'Deduct'), ('hold', 'Hold'), ('hold_release', 'Hold release'), ('usage_debit', 'Usage debit'), ('subscription_fee', 'Subscription fee'), ('correction', 'Correction'), ('refund', 'Refund'), ('purchase', 'Card purchase'), ('payment_reversal', 'Card payment reversed'), ('wallet_credit', 'pymthouse wallet credit'), ('wallet_debit', 'pymthouse wallet usage'), ('promotion', 'Promotional credit'), ('promotion_expiry', 'Promotional credit expired')], max_length=20),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('effect__in', ('credit',)), ('kind', 'grant')), models.Q(('effect__in', ('debit',)), ('kind', 'deduct')), models.Q(('effect__in', ('hold',)), ('kind', 'hold')), models.Q(('effect__in', ('release',)), ('kind', 'hold_release')), models.Q(('effect__in', ('debit',)), ('kind', 'usage_debit')), models.Q(('effect__in', ('record',)), ('kind', 'subscription_fee')), models.Q(('effect__in', ('credit', 'debit')), ('kind', 'correction')), models.Q(('effect__in', ('credit',)), ('kind', 'refund')), models.Q(('effect__in', ('credit',)), ('kind', 'purchase')), models.Q(('effect__in', ('debit',)), ('kind', 'payment_reversal')), models.Q(('effect__in', ('credit',)), ('kind', 'wallet_credit')), models.Q(('effect__in', ('debit',)), ('kind', 'wallet_debit')), models.Q(('effect__in', ('credit',)), ('kind', 'promotion')), models.Q(('effect__in', ('debit',)), ('kind', 'promotion_expiry')), _connector='OR'), name='billing_ledger_kind_effect'),
        ),
        migrations.AddField(
            model_name='payment',
            name='account',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='payments', to='billing.account'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['created', 'submitted', 'requires_action', 'processing', 'succeeded', 'failed'])), name='billing_payment_status_valid'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.UniqueConstraint(condition=models.Q(('purpose', 'auto_topup'), ('status__in', ('created', 'submitted', 'requires_action', 'processing'))), fields=('account',), name='billing_payment_one_auto_topup_in_flight'),
        ),
        migrations.RunPython(sqlite_trigger_recreate, migrations.RunPython.noop, elidable=False),
    ]
