"""What users pay becomes exact USD micros (issue 13; docs/billing.md "Units").

Schema: the user-money columns are renamed from ``*_wei`` to ``*_micros`` (same exact
big-integer type); usage charges gain their network side (fee in wei, the ETH/USD rate,
its source and time); holds gain the network-fee ceiling they cover; observed prices
keep a jumped price for staff; ``MeteredRate`` keeps rates from pymthouse's metering.

Data: every existing wei amount is converted at the configured ``BILLING_ETH_USD_RATE``
when this migration runs (stated on each converted usage charge: ``rate_source =
migration``), rounded down to a whole micro (a user never gains by the conversion).
So that the ledger's invariants hold exactly afterwards (each entry's totals after it,
``balance == Σ credit − Σ debit``, ``held == Σ hold − Σ release``, available ≥ 0), an
entry's micros are the change of the *converted running totals* it makes: ``f(after) −
f(before)`` with ``f(w) = ⌊w × rate × 10⁶ / 10¹⁸⌋``; open holds are converted the same
way over their running sum, so they add up to the account's converted held amount.
The append-only triggers are dropped for the conversion and recreated (SQLite rebuilds
the table for the constraint changes, which drops them too).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from django.conf import settings
from django.db import migrations, models

import billing.fields

MESSAGE = "billing ledger is append-only: add a correction entry instead"
POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION billing_ledgerentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{MESSAGE}';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS billing_ledgerentry_no_update ON billing_ledgerentry;
CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledgerentry_append_only();
"""
POSTGRES_DOWN = "DROP TRIGGER IF EXISTS billing_ledgerentry_no_update ON billing_ledgerentry;"
SQLITE_UP = (
    "DROP TRIGGER IF EXISTS billing_ledgerentry_no_update;",
    f"""CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;""",
)
SQLITE_DOWN = "DROP TRIGGER IF EXISTS billing_ledgerentry_no_update;"


def _triggers(schema_editor: Any, *, up: bool) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP if up else POSTGRES_DOWN)
    elif vendor == "sqlite":
        for statement in SQLITE_UP if up else (SQLITE_DOWN,):
            schema_editor.execute(statement)


def _rate() -> Fraction:
    text = str(getattr(settings, "BILLING_ETH_USD_RATE", "") or "3000").strip()
    rate = Fraction(text)
    if rate <= 0:
        raise ValueError("BILLING_ETH_USD_RATE must be positive to convert wei balances")
    return rate


def convert(apps: Any, schema_editor: Any) -> None:
    rate = _rate()
    rate_text = str(getattr(settings, "BILLING_ETH_USD_RATE", "") or "3000").strip()
    per_wei = rate * 10**6 / 10**18

    def f(wei: int | None) -> int | None:
        if wei is None:
            return None
        value = Fraction(int(wei)) * per_wei
        return value.numerator // value.denominator

    _triggers(schema_editor, up=False)
    Plan = apps.get_model("billing", "Plan")
    Account = apps.get_model("billing", "Account")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    Hold = apps.get_model("billing", "Hold")
    LedgerRejection = apps.get_model("billing", "LedgerRejection")
    for plan in Plan.objects.all():
        plan.subscription_fee_micros = f(plan.subscription_fee_micros)
        plan.flat_price_micros = f(plan.flat_price_micros)
        plan.save(update_fields=["subscription_fee_micros", "flat_price_micros"])
    for rejection in LedgerRejection.objects.all():
        LedgerRejection.objects.filter(pk=rejection.pk).update(
            amount_micros=f(rejection.amount_micros)
        )
    for account in Account.objects.all():
        before_balance = before_held = 0
        for entry in LedgerEntry.objects.filter(account_id=account.pk).order_by("id"):
            after_balance, after_held = int(entry.balance_after_micros), int(entry.held_after_micros)
            if entry.effect in ("credit", "debit"):
                amount = abs(f(after_balance) - f(before_balance))
            elif entry.effect in ("hold", "release"):
                amount = abs(f(after_held) - f(before_held))
            else:
                amount = f(entry.amount_micros)
            changes: dict[str, Any] = {
                "amount_micros": amount,
                "balance_after_micros": f(after_balance),
                "held_after_micros": f(after_held),
            }
            if entry.kind == "usage_debit":
                changes.update(eth_usd_rate=rate_text, rate_source="migration")
            LedgerEntry.objects.filter(pk=entry.pk).update(**changes)
            before_balance, before_held = after_balance, after_held
        cumulative = 0
        for hold in Hold.objects.filter(account_id=account.pk, status="open").order_by("id"):
            start = cumulative
            cumulative += int(hold.amount_micros)
            Hold.objects.filter(pk=hold.pk).update(
                amount_micros=f(cumulative) - f(start), eth_usd_rate=rate_text
            )
        Account.objects.filter(pk=account.pk).update(
            balance_micros=f(account.balance_micros), held_micros=f(account.held_micros)
        )
    for hold in Hold.objects.exclude(status="open"):
        Hold.objects.filter(pk=hold.pk).update(
            amount_micros=f(hold.amount_micros),
            charged_micros=f(hold.charged_micros),
            eth_usd_rate=rate_text,
        )
    _triggers(schema_editor, up=True)


def triggers_up(apps: Any, schema_editor: Any) -> None:
    _triggers(schema_editor, up=True)


def back_to_wei(apps: Any, schema_editor: Any) -> None:
    """Approximate: micros × 10¹² / rate, rounded down (running totals re-derived the same
    way). Converting back and forth loses sub-micro digits; restore a backup for exact."""
    rate = _rate()

    def g(micros: int | None) -> int | None:
        if micros is None:
            return None
        value = Fraction(int(micros)) * 10**12 / rate
        return value.numerator // value.denominator

    _triggers(schema_editor, up=False)
    for model, fields in (
        ("Plan", ("subscription_fee_micros", "flat_price_micros")),
        ("Account", ("balance_micros", "held_micros")),
        ("LedgerEntry", ("amount_micros", "balance_after_micros", "held_after_micros")),
        ("Hold", ("amount_micros", "charged_micros")),
        ("LedgerRejection", ("amount_micros",)),
    ):
        Model = apps.get_model("billing", model)
        for row in Model.objects.all():
            Model.objects.filter(pk=row.pk).update(
                **{field: g(getattr(row, field)) for field in fields}
            )
    _triggers(schema_editor, up=True)


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_hold_sweep_order")]

    operations = [
        migrations.RemoveConstraint(model_name="account", name="billing_account_available_non_negative"),
        migrations.RemoveConstraint(model_name="account", name="billing_account_balance_non_negative"),
        migrations.RemoveConstraint(model_name="account", name="billing_account_held_non_negative"),
        migrations.RemoveConstraint(model_name="ledgerentry", name="billing_ledger_available_non_negative"),
        migrations.RemoveConstraint(model_name="hold", name="billing_hold_amount_non_negative"),
        migrations.RemoveConstraint(model_name="hold", name="billing_hold_charged_non_negative"),
        migrations.RenameField("plan", "subscription_fee_wei", "subscription_fee_micros"),
        migrations.RenameField("plan", "flat_price_wei", "flat_price_micros"),
        migrations.RenameField("account", "balance_wei", "balance_micros"),
        migrations.RenameField("account", "held_wei", "held_micros"),
        migrations.RenameField("ledgerentry", "amount_wei", "amount_micros"),
        migrations.RenameField("ledgerentry", "balance_after_wei", "balance_after_micros"),
        migrations.RenameField("ledgerentry", "held_after_wei", "held_after_micros"),
        migrations.RenameField("hold", "amount_wei", "amount_micros"),
        migrations.RenameField("hold", "charged_wei", "charged_micros"),
        migrations.RenameField("ledgerrejection", "amount_wei", "amount_micros"),
        migrations.AddField(
            model_name="ledgerentry",
            name="network_fee_wei",
            field=billing.fields.WeiField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="eth_usd_rate",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="rate_source",
            field=models.CharField(
                blank=True,
                choices=[
                    ("metered", "pymthouse metering"),
                    ("configured", "configured rate"),
                    ("migration", "wei balance migration"),
                ],
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="rate_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="hold",
            name="max_fee_wei",
            field=billing.fields.WeiField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="hold",
            name="eth_usd_rate",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="hold",
            name="absorbed_micros",
            field=billing.fields.WeiAmountField(default=0),
        ),
        migrations.AddField(
            model_name="hold",
            name="description",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="observedprice",
            name="jumped_price_wei",
            field=billing.fields.WeiField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="observedprice",
            name="jumped_units_per_payment",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="observedprice",
            name="jumped_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="MeteredRate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("eth_usd_rate", models.CharField(help_text="USD per ETH, exact decimal", max_length=64)),
                ("usage_ref", models.CharField(blank=True, default="", max_length=200)),
                ("observed_at", models.DateTimeField(db_index=True)),
            ],
            options={"ordering": ("-observed_at", "-id")},
        ),
        migrations.RunPython(convert, back_to_wei, elidable=False),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("balance_micros__gte", models.F("held_micros"))),
                name="billing_account_available_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("balance_micros__gte", 0)),
                name="billing_account_balance_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("held_micros__gte", 0)),
                name="billing_account_held_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.CheckConstraint(
                condition=models.Q(("balance_after_micros__gte", models.F("held_after_micros"))),
                name="billing_ledger_available_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="hold",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount_micros__gte", 0)),
                name="billing_hold_amount_non_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="hold",
            constraint=models.CheckConstraint(
                condition=models.Q(("charged_micros__isnull", True), ("charged_micros__gte", 0), _connector="OR"),
                name="billing_hold_charged_non_negative",
            ),
        ),
        # SQLite rebuilt the ledger table for the constraint above: its trigger with it.
        migrations.RunPython(triggers_up, migrations.RunPython.noop, elidable=False),
    ]
