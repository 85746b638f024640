"""One bad row in pymthouse's usage answer never stops the mirror for everyone, an
ambiguous manifest row never charges anyone, and the staff page needs its permission."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client
from django.utils import timezone

from billing.models import Account, Hold, HoldStatus, LedgerEntry, Plan
from billing.services import account_change_plan, credit_grant, plans_seed
from inference.models import Generation
from tests.billing.conftest import admit_generation
from tests.factories import UserFactory
from tests.integrations.conftest import builder_path
from tests.sandbox_server import SandboxControl
from tests.usage.helpers import billing_staff
from usage.models import (
    UsageManifest,
    UsageQuarantine,
    UsageSyncRun,
    UsageSyncState,
    UsageSyncStatus,
    UsageUserAggregate,
)
from usage.services.sync import usage_sync_run

pytestmark = pytest.mark.django_db

USAGE = builder_path("/usage")
URL = "/staff/billing/"


def _row(ext: str, manifest: str, fee_wei: int, requests: int = 1) -> dict[str, Any]:
    return {
        "externalUserId": ext,
        "manifestId": manifest,
        "feeWei": str(fee_wei),
        "usdMicros": "3",
        "requests": requests,
    }


def _mirrored() -> list[tuple[str, str, int]]:
    return sorted(UsageManifest.objects.values_list("external_user_id", "manifest_id", "fee_wei"))


@pytest.mark.parametrize(
    ("bad", "kind", "reason"),
    [
        (_row("owner:mallory", "m-x", 9), "user_row", "externalUserId refused"),
        (_row("eve@example.com", "m-x", 9), "user_row", "externalUserId refused"),
        (_row("u-long", "m" * 201, 9), "manifest_row", "manifestId longer than 200"),
    ],
    ids=["owner-prefix", "email", "manifest-id-too-long"],
)
def test_a_poison_row_is_quarantined_and_everyone_else_is_mirrored(
    sandbox: SandboxControl, bad: dict[str, Any], kind: str, reason: str
) -> None:
    sandbox.seed_usage([_row("u-good", "m-1", 10**30), _row("u-other", "m-2", 5), bad])
    run = usage_sync_run()
    assert run.status == UsageSyncStatus.OK
    assert run.quarantined == 1
    assert run.detail.endswith(", 1 rows quarantined")
    assert UsageSyncRun.objects.filter(pk=run.pk).exists()
    assert _mirrored() == [("u-good", "m-1", 10**30), ("u-other", "m-2", 5)]
    expected_users = {"u-good", "u-other"} | ({"u-long"} if kind == "manifest_row" else set())
    assert set(UsageUserAggregate.objects.values_list("external_user_id", flat=True)) == (
        expected_users
    )
    quarantined = UsageQuarantine.objects.get()
    assert (quarantined.kind, quarantined.external_user_id) == (kind, bad["externalUserId"])
    assert quarantined.reason.startswith(reason)
    assert quarantined.times_seen == 1
    state = UsageSyncState.objects.get()
    assert (state.status, state.quarantined, state.last_success_at) == (
        UsageSyncStatus.OK,
        1,
        run.finished_at,
    )
    # Staff see the row as it was received.
    staff = Client()
    staff.force_login(billing_staff())
    page = staff.get(URL).content.decode()
    assert "Quarantined usage rows" in page
    assert bad["externalUserId"] in page
    # The mirror keeps working: a later row of a good user is applied as usual.
    sandbox.seed_usage([_row("u-good", "m-3", 7)])
    assert usage_sync_run().status == UsageSyncStatus.OK
    assert ("u-good", "m-3", 7) in _mirrored()
    # A user row is screened on every changed answer (the same row, counted again); the
    # manifests of a user whose aggregate did not change are not read again.
    assert UsageQuarantine.objects.get().times_seen == (2 if kind == "user_row" else 1)


def _answer(**rows: Any) -> dict[str, Any]:
    return {
        "clientId": django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
        "source": "openmeter",
        "period": {"start": None, "end": None},
        "totals": {"requestCount": 2, "currency": "USD", "networkFeeUsdMicros": "2"},
        **rows,
    }


def test_a_request_count_past_64_bits_is_quarantined_and_everyone_else_is_mirrored(
    sandbox: SandboxControl,
) -> None:
    sandbox.seed_usage([_row("u-good", "m-1", 10**30), _row("u-other", "m-2", 5)])
    # pymthouse sends the count as an integer string (exact at any size).
    users = [
        {"externalUserId": "u-good", "requestCount": 1, "networkFeeUsdMicros": "3"},
        {"externalUserId": "u-huge", "requestCount": str(2**63), "networkFeeUsdMicros": "3"},
        {"externalUserId": "u-other", "requestCount": 1, "networkFeeUsdMicros": "3"},
    ]
    sandbox.add_fault("GET", USAGE, status=200, times=1, body=_answer(byUser=users))
    run = usage_sync_run()
    assert (run.status, run.quarantined, run.users_changed) == (UsageSyncStatus.OK, 1, 2)
    assert _mirrored() == [("u-good", "m-1", 10**30), ("u-other", "m-2", 5)]
    assert not UsageUserAggregate.objects.filter(external_user_id="u-huge").exists()
    quarantined = UsageQuarantine.objects.get()
    assert (quarantined.kind, quarantined.external_user_id, quarantined.reason) == (
        "user_row",
        "u-huge",
        "requestCount does not fit a 64-bit column",
    )
    assert f'"requestCount": "{2**63}"' in quarantined.raw
    assert UsageSyncState.objects.get().last_success_at == run.finished_at


def test_a_manifest_listed_twice_with_different_amounts_is_flagged_and_never_charged(
    sandbox: SandboxControl,
) -> None:
    plans_seed()
    owner = UserFactory()
    account_change_plan(
        user=owner, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="t"
    )
    credit_grant(
        user=owner, amount_micros=10**30, reason="t", acting_user=None, idempotency_key="g"
    )
    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512,
            height=512, manifest_id="sess-twice",
        )  # fmt: skip
        admit_generation(generation)
    Generation.objects.filter(pk=generation.pk).update(
        status="failed", error_code="outcome_unknown", payment_claimed_at=timezone.now()
    )
    account_before = Account.objects.values_list("balance_micros", "held_micros").get(pk=owner.pk)
    ext = owner.external_user_id
    sandbox.add_fault(
        "GET",
        USAGE,
        status=200,
        times=1,
        body=_answer(
            byUser=[{"externalUserId": ext, "requestCount": 2, "networkFeeUsdMicros": "2"}]
        ),
    )
    sandbox.add_fault(
        "GET",
        USAGE,
        status=200,
        times=1,
        body=_answer(
            byManifest=[
                {"manifestId": "sess-twice", "currency": "USD",
                 "networkFeeUsdMicros": "1", "feeWei": "1000"},
                {"manifestId": "sess-twice", "currency": "USD",
                 "networkFeeUsdMicros": "1", "feeWei": "999999"},
            ]
        ),
    )  # fmt: skip
    run = usage_sync_run()
    assert (run.status, run.settled, run.manifests_new, run.quarantined) == (
        UsageSyncStatus.OK,
        0,
        0,
        2,
    )
    assert sorted(UsageQuarantine.objects.values_list("kind", "manifest_id")) == [
        ("conflict", "sess-twice"),
        ("conflict", "sess-twice"),
    ]
    # Nothing charged, nothing joined, the hold still waits (for staff or the sweep).
    assert not LedgerEntry.objects.filter(kind="usage_debit").exists()
    assert not UsageManifest.objects.exists()
    assert Hold.objects.get(generation_id=generation.pk).status == HoldStatus.OPEN
    generation.refresh_from_db()
    assert generation.cost_wei is None
    assert (
        Account.objects.values_list("balance_micros", "held_micros").get(pk=owner.pk)
        == account_before
    )


def test_staff_without_the_permission_see_neither_the_page_nor_the_csv(
    sandbox: SandboxControl,
) -> None:
    sandbox.seed_usage([_row("u-1", "m-1", 5)])
    usage_sync_run()
    plain_staff = Client()
    plain_staff.force_login(UserFactory(is_staff=True))
    for url in (URL, URL + "csv/"):
        assert plain_staff.get(url).status_code == 403
    allowed = Client()
    allowed.force_login(billing_staff())
    assert allowed.get(URL).status_code == 200
    assert allowed.get(URL + "csv/").status_code == 200


def test_the_staff_csv_neutralises_spreadsheet_formulas(sandbox: SandboxControl) -> None:
    formula = "=cmd|'/Ccalc'!A0@example.com"
    user = UserFactory(email=formula)
    sandbox.seed_usage([_row(user.external_user_id, "m-1", 5)])
    usage_sync_run()
    staff = Client()
    staff.force_login(billing_staff())
    text = b"".join(staff.get(URL + "csv/").streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][:2] == [user.external_user_id, "'" + formula]
    assert not any(cell.startswith("=") for row in rows for cell in row)
