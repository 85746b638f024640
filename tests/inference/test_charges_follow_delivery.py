"""Issue 13: the user pays for images they get, and deleting an image does not change
what is owed or what was used (items 1-3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from billing.models import Account, EntryKind, Hold, HoldStatus, LedgerEntry, Plan
from inference.errors import GenerationAdmissionRefusedError
from inference.models import Generation, GenerationStatus
from inference.selectors import generations_by_manifest, generations_counted_this_month
from inference.services import generation_create, generation_delete
from inference.services.reconcile import holds_resolve_stale
from inference.services.transitions import generation_fail
from tests.billing.conftest import charge_micros, usage_settle
from tests.factories import UserFactory
from tests.inference.paying_user import CREDIT, HOLD_MICROS, ledger_kinds, pay_as_you_go_user
from tests.integrations.livepeer.conftest import RUNNER_1_ID, set_runner
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

NOT_CHARGED = "The network failed to deliver this image; you were not charged."
RUNNER_FEE = 4_768_371_000_000  # the sandbox runner's fixed price, one unit


def _charge(fee: int) -> int:
    """Pay-as-you-go at the test rate, rounded up, never more than the hold (the estimate)."""
    return min(charge_micros(fee), HOLD_MICROS)


def _run_eagerly(user: User, capture: Any) -> Generation:
    with capture(execute=True):  # the task runs eagerly, in this process
        generation = generation_create(
            owner=user, prompt="a lighthouse at dusk", width=512, height=384, seed=7
        )
    return Generation.objects.get(pk=generation.pk)


def _page(user: User, generation: Generation) -> str:
    client = Client()
    client.force_login(user)
    return client.get(reverse("inference:detail", args=[generation.pk])).content.decode()


# --- 1. no charge for an image the user did not get ------------------------------------


def test_a_paid_call_that_delivered_a_wrong_size_image_is_refunded(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "wrong-size"})
    user = pay_as_you_go_user()

    generation = _run_eagerly(user, django_capture_on_commit_callbacks)

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert not generation.image
    assert generation.tickets_paid == 1
    assert generation.expected_fee_wei == RUNNER_FEE
    # The network was paid and staff still see it: the usage debit stays, the refund is
    # its own credit entry of exactly the debited amount.
    debit = LedgerEntry.objects.get(account_id=user.pk, kind=EntryKind.USAGE_DEBIT)
    assert (debit.amount_micros, debit.generation_id) == (_charge(RUNNER_FEE), generation.pk)
    refund = LedgerEntry.objects.get(account_id=user.pk, kind="refund")
    assert (refund.effect, refund.amount_micros) == ("credit", _charge(RUNNER_FEE))
    assert refund.idempotency_key == f"refund:{generation.pk}"
    assert refund.generation_id == generation.pk
    assert ledger_kinds(user) == ["grant", "hold", "hold_release", "usage_debit", "refund"]
    account = Account.objects.get(pk=user.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT, 0)
    # The user is told the truth, not "Please try again".
    assert generation.error_message == NOT_CHARGED
    page = _page(user, generation)
    assert NOT_CHARGED in page
    assert "Please try again" not in page
    assert "data-charge-micros" not in page  # no "Charged" amount on the page

    # Never twice: the hook again, the failure again, and a later metered row change nothing.
    from billing.services import generation_charge_refund

    generation_charge_refund(owner_id=user.pk, generation_id=generation.pk, reason="again")
    assert generation_fail(generation_id=generation.pk, code="upstream_failed") is False
    assert usage_settle(generation_id=generation.pk, fee_wei=RUNNER_FEE, usage_ref="m:x") is False
    assert ledger_kinds(user) == ["grant", "hold", "hold_release", "usage_debit", "refund"]
    assert Account.objects.get(pk=user.pk).balance_micros == CREDIT


def test_with_charge_undelivered_on_the_paid_call_stays_charged(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.BILLING_CHARGE_UNDELIVERED = True
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "wrong-size"})
    user = pay_as_you_go_user()

    generation = _run_eagerly(user, django_capture_on_commit_callbacks)

    assert generation.error_code == "upstream_failed"
    assert ledger_kinds(user) == ["grant", "hold", "hold_release", "usage_debit"]
    assert Account.objects.get(pk=user.pk).balance_micros == CREDIT - _charge(RUNNER_FEE)
    assert generation.error_message != NOT_CHARGED


def _claimed(user: User, *, manifest_id: str = "") -> Generation:
    generation = generation_create(
        owner=user, prompt="a lighthouse", width=512, height=512, enqueue=False
    )
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING,
        attempt_id="a-1",
        payment_claimed_at=timezone.now(),
        manifest_id=manifest_id,
    )
    return generation


def test_a_known_failure_before_the_payment_was_confirmed_releases_the_hold_for_good() -> None:
    user = pay_as_you_go_user()
    generation = _claimed(user, manifest_id="sess-never-confirmed")

    assert generation_fail(generation_id=generation.pk, code="upstream_failed", attempt_id="a-1")

    hold = Hold.objects.get(generation_id=generation.pk)
    assert hold.status == HoldStatus.RELEASED
    assert Account.objects.get(pk=user.pk).held_micros == 0
    # The metered row arriving later does not charge an image the user did not get.
    assert usage_settle(generation_id=generation.pk, fee_wei=RUNNER_FEE, usage_ref="m:x") is False
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).exists()
    assert Account.objects.get(pk=user.pk).balance_micros == CREDIT
    assert Generation.objects.get(pk=generation.pk).error_message == NOT_CHARGED


def test_an_unknown_outcome_is_not_refunded_when_it_ends() -> None:
    user = pay_as_you_go_user()
    generation = _claimed(user, manifest_id="sess-unknown")

    assert generation_fail(generation_id=generation.pk, code="outcome_unknown", attempt_id="a-1")

    assert Hold.objects.get(generation_id=generation.pk).status == HoldStatus.OPEN
    assert not LedgerEntry.objects.filter(kind="refund").exists()
    assert Account.objects.get(pk=user.pk).held_micros == HOLD_MICROS
    assert Generation.objects.get(pk=generation.pk).error_message != NOT_CHARGED


# --- 2. allowances from an append-only record -----------------------------------------


def test_deleting_images_does_not_give_the_free_allowance_back() -> None:
    Plan.objects.filter(slug="free").update(monthly_generation_allowance=2)
    user = UserFactory()
    assert Account.objects.get(pk=user.pk).plan.slug == "free"
    made = [
        generation_create(owner=user, prompt=f"p{i}", width=512, height=512, enqueue=False)
        for i in range(2)
    ]
    Generation.objects.filter(pk__in=[g.pk for g in made]).update(
        status=GenerationStatus.SUCCEEDED, payment_claimed_at=timezone.now()
    )
    for generation in made:
        generation_delete(generation=generation, acting_user=user)
    assert not Generation.objects.filter(owner=user).exists()
    assert generations_counted_this_month(owner_id=user.pk) == 2

    with pytest.raises(GenerationAdmissionRefusedError) as refused:
        generation_create(owner=user, prompt="third", width=512, height=512, enqueue=False)

    assert refused.value.code == "allowance_used"
    assert not Generation.objects.filter(owner=user).exists()


def test_an_image_that_ended_without_paying_does_not_count() -> None:
    Plan.objects.filter(slug="free").update(monthly_generation_allowance=2)
    user = UserFactory()
    first = generation_create(owner=user, prompt="p", width=512, height=512, enqueue=False)
    assert generations_counted_this_month(owner_id=user.pk) == 1
    assert generation_fail(generation_id=first.pk, code="upstream_unavailable")
    assert generations_counted_this_month(owner_id=user.pk) == 0
    generation_delete(generation=first, acting_user=user)
    assert generations_counted_this_month(owner_id=user.pk) == 0
    queued = generation_create(owner=user, prompt="q", width=512, height=512, enqueue=False)
    generation_delete(generation=queued, acting_user=user)  # deleted before it ran
    assert generations_counted_this_month(owner_id=user.pk) == 0


# --- 3. a paid unknown outcome that the user deletes is still charged ------------------


def test_a_deleted_paid_unknown_image_is_charged_when_its_manifest_arrives() -> None:
    user = pay_as_you_go_user()
    generation = _claimed(user, manifest_id="sess-deleted-unknown")
    assert generation_fail(generation_id=generation.pk, code="outcome_unknown", attempt_id="a-1")
    hold = Hold.objects.get(generation_id=generation.pk)

    generation_delete(generation=generation, acting_user=user)

    assert not Generation.objects.filter(pk=generation.pk).exists()  # the user sees it gone
    # The stale-hold sweep before the timeout waits for the mirror, as for a kept row.
    stale = timedelta(seconds=settings.BILLING_STALE_HOLD_AFTER_SECONDS + 1)
    assert holds_resolve_stale(now=hold.created_at + stale) == []
    hold.refresh_from_db()
    assert hold.status == HoldStatus.OPEN
    assert Account.objects.get(pk=user.pk).held_micros == HOLD_MICROS

    # The mirror still joins the manifest to the deleted image, same owner only.
    assert generations_by_manifest(manifest_ids={"sess-deleted-unknown"}, owner_ids={user.pk}) == {
        (user.pk, "sess-deleted-unknown"): (generation.pk, generation.created_at.date())
    }
    other = UserFactory()
    assert (
        generations_by_manifest(manifest_ids={"sess-deleted-unknown"}, owner_ids={other.pk}) == {}
    )

    metered = 10**15 + 7
    assert usage_settle(generation_id=generation.pk, fee_wei=metered, usage_ref="manifest:m")
    assert (
        usage_settle(generation_id=generation.pk, fee_wei=metered, usage_ref="manifest:m") is False
    )
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    assert (debit.amount_micros, debit.generation_id) == (_charge(metered), generation.pk)
    account = Account.objects.get(pk=user.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT - _charge(metered), 0)
    hold.refresh_from_db()
    assert hold.status == HoldStatus.SETTLED


def test_a_deleted_paid_unknown_image_is_released_only_at_the_timeout() -> None:
    user = pay_as_you_go_user()
    generation = _claimed(user, manifest_id="sess-never-metered")
    generation_fail(generation_id=generation.pk, code="outcome_unknown", attempt_id="a-1")
    hold = Hold.objects.get(generation_id=generation.pk)
    generation_delete(generation=generation, acting_user=user)

    timeout = timedelta(seconds=settings.BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS)
    [resolved] = holds_resolve_stale(now=hold.created_at + timeout)

    assert (resolved.action, resolved.detail) == ("timed_out", "unknown")
    assert Account.objects.get(pk=user.pk).held_micros == 0


def test_a_deleted_unpaid_image_still_releases_its_hold() -> None:
    user = pay_as_you_go_user()
    generation = generation_create(owner=user, prompt="p", width=512, height=512, enqueue=False)
    # Ended before paying, but its hook never ran (the hold is still open).
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.FAILED, error_code="upstream_unavailable"
    )
    generation_delete(generation=generation, acting_user=user)
    hold = Hold.objects.get(generation_id=generation.pk)
    stale = timedelta(seconds=settings.BILLING_STALE_HOLD_AFTER_SECONDS + 1)
    [resolved] = holds_resolve_stale(now=hold.created_at + stale)
    assert (resolved.action, resolved.detail) == ("released", "deleted")
    assert Account.objects.get(pk=user.pk).held_micros == 0


def test_the_usage_sync_charges_a_deleted_paid_unknown_image_once(
    sandbox: SandboxControl,
) -> None:
    from usage.models import UsageManifest
    from usage.services.sync import usage_sync_run

    user = pay_as_you_go_user()
    generation = _claimed(user, manifest_id="sess-sync-deleted")
    generation_fail(generation_id=generation.pk, code="outcome_unknown", attempt_id="a-1")
    generation_delete(generation=generation, acting_user=user)
    metered = 10**15 + 7
    sandbox.seed_usage(
        [
            {
                "externalUserId": user.external_user_id,
                "manifestId": "sess-sync-deleted",
                "feeWei": str(metered),
                "usdMicros": "3",
                "requests": 1,
            }
        ]
    )

    assert usage_sync_run().settled == 1

    manifest = UsageManifest.objects.get(manifest_id="sess-sync-deleted")
    assert manifest.generation_id is None  # the row is gone; the charge is not
    assert manifest.day == generation.created_at.date()
    debit = LedgerEntry.objects.get(kind=EntryKind.USAGE_DEBIT)
    # at the rate pymthouse metered it at (3 µ$ for the fee): 3 × 6/5 = 3.6 → 4 µ$
    assert (debit.amount_micros, debit.generation_id) == (4, generation.pk)
    assert (debit.usage_ref, debit.rate_source) == ("manifest:sess-sync-deleted", "metered")
    account = Account.objects.get(pk=user.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT - 4, 0)
    assert usage_sync_run().settled == 0
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE_DEBIT).count() == 1
