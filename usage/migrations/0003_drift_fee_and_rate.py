"""Drift separates a fee difference from a rate difference, and alerts only where a charge
was expected (issue 13; docs/usage-mirror.md "Drift").

Schema: ``UsageDrift`` gains ``local_usd_micros``, ``metered_usd_micros`` (exact,
non-negative) and the signed ``fee_diff_wei`` and ``rate_diff_usd_micros``.

Data: every existing drift row is recomputed by the new rule (the formulas of
``usage.services.plan.drift_figures``, restated here so this migration does not change
when that code does), so old alerts of users whose images took no hold are cleared.
The rows are read once each (ledger usage debits, manifests, holds), in Python.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.db import migrations

import billing.fields

MAX_UINT256 = 2**256 - 1
SIGNED_MAX = 10**80 - 1


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def _usd_exact(wei: int, rate_text: str) -> Fraction:
    try:
        rate = Fraction(rate_text)
    except (ValueError, ZeroDivisionError):
        return Fraction(0)
    return Fraction(wei) * rate * 10**6 / 10**18


def recompute(apps: Any, schema_editor: Any) -> None:
    UsageDrift = apps.get_model("usage", "UsageDrift")
    if not UsageDrift.objects.exists():
        return
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    Hold = apps.get_model("billing", "Hold")
    UsageManifest = apps.get_model("usage", "UsageManifest")
    local_wei: dict[tuple[str, date], int] = defaultdict(int)
    local_usd: dict[tuple[str, date], Fraction] = defaultdict(Fraction)
    for ext, created_at, wei, rate in (
        LedgerEntry.objects.filter(kind="usage_debit")
        .values_list("account__user__external_user_id", "created_at", "network_fee_wei", "eth_usd_rate")
        .iterator(chunk_size=5000)
    ):
        key = (ext, created_at.astimezone(UTC).date())
        local_wei[key] += wei or 0
        if wei:
            local_usd[key] += _usd_exact(wei, rate)
    metered_wei: dict[tuple[str, date], int] = defaultdict(int)
    metered_usd: dict[tuple[str, date], int] = defaultdict(int)
    for ext, day, wei, usd in UsageManifest.objects.values_list(
        "external_user_id", "day", "fee_wei", "network_fee_usd_micros"
    ).iterator(chunk_size=5000):
        metered_wei[(ext, day)] += wei or 0
        metered_usd[(ext, day)] += usd or 0
    expected = {
        (ext, created_at.astimezone(UTC).date())
        for ext, created_at in Hold.objects.values_list(
            "account__user__external_user_id", "created_at"
        ).iterator(chunk_size=5000)
    }
    threshold = settings.BILLING_DRIFT_ALERT_WEI
    for row in UsageDrift.objects.all().iterator(chunk_size=2000):
        key = (row.external_user_id, row.day)
        lw = min(local_wei.get(key, 0), MAX_UINT256)
        lu = local_usd.get(key, Fraction(0))
        mw = min(metered_wei.get(key, 0), MAX_UINT256)
        mu = min(metered_usd.get(key, 0), MAX_UINT256)
        fee_diff = mw - lw
        if lw:
            rate_diff = max(-SIGNED_MAX, min(mu - _ceil(Fraction(mw) * lu / lw), SIGNED_MAX))
        else:
            rate_diff = 0 if mw else mu
        row.local_debit_wei = lw
        row.metered_fee_wei = mw
        row.local_usd_micros = min(_ceil(lu), MAX_UINT256)
        row.metered_usd_micros = mu
        row.fee_diff_wei = fee_diff
        row.rate_diff_usd_micros = rate_diff
        row.alert = key in expected and fee_diff > threshold
        row.save(
            update_fields=[
                "local_debit_wei",
                "metered_fee_wei",
                "local_usd_micros",
                "metered_usd_micros",
                "fee_diff_wei",
                "rate_diff_usd_micros",
                "alert",
            ]
        )
    UsageSyncState = apps.get_model("usage", "UsageSyncState")
    UsageSyncState.objects.update(drift_alerts=UsageDrift.objects.filter(alert=True).count())


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0002_quarantine"),
        ("billing", "0013_ledger_refund_kind"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagedrift",
            name="fee_diff_wei",
            field=billing.fields.SignedAmountField(default=0),
        ),
        migrations.AddField(
            model_name="usagedrift",
            name="local_usd_micros",
            field=billing.fields.WeiField(default=0),
        ),
        migrations.AddField(
            model_name="usagedrift",
            name="metered_usd_micros",
            field=billing.fields.WeiField(default=0),
        ),
        migrations.AddField(
            model_name="usagedrift",
            name="rate_diff_usd_micros",
            field=billing.fields.SignedAmountField(default=0),
        ),
        migrations.RunPython(recompute, migrations.RunPython.noop),
    ]
