"""A closed account's queued work ends ``canceled`` with its hold released, before any ticket.

Before, deactivating or deleting a user left their queued generations queued: the
workers then minted their credentials, bought tickets and delivered (and charged) them.
Real services, the real sandbox (signer, OIDC token endpoint) over HTTP.
"""

from __future__ import annotations

import pytest

from accounts.models import User
from accounts.services import user_delete, user_set_active
from billing.models import Account, Hold, HoldStatus
from inference.models import Generation, GenerationStatus
from inference.services import FAILURE_MESSAGES, generation_create, generation_run
from tests.inference.paying_user import CREDIT, EntryKind, ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db(transaction=True)

PAYMENT = "/signer/generate-live-payment"
TOKEN = "/api/v1/oidc/token"


@pytest.fixture
def owner(sandbox: SandboxControl, django_capture_on_commit_callbacks) -> User:
    with django_capture_on_commit_callbacks(execute=True):  # provisioned at the sandbox
        return pay_as_you_go_user()


def _three_queued(owner: User) -> list[Generation]:
    return [
        generation_create(owner=owner, prompt=f"a lighthouse {n}", width=512, height=512,
                          enqueue=False)
        for n in range(3)
    ]  # fmt: skip


def _assert_canceled_and_free(owner: User, generations: list[Generation]) -> None:
    rows = Generation.objects.filter(pk__in=[g.pk for g in generations])
    assert {(row.status, row.error_code) for row in rows} == {
        (GenerationStatus.CANCELED, "account_closed")
    }
    assert {row.error_message for row in rows} == {FAILURE_MESSAGES["account_closed"]}
    assert set(Hold.objects.filter(account_id=owner.pk).values_list("status", flat=True)) == {
        HoldStatus.RELEASED
    }
    account = Account.objects.get(pk=owner.pk)
    assert (account.balance_micros, account.held_micros) == (CREDIT, 0)
    assert EntryKind.USAGE_DEBIT not in ledger_kinds(owner)


@pytest.mark.parametrize("close", ["deactivate", "delete"])
def test_closing_an_account_cancels_its_queued_work_before_any_ticket(
    owner: User, sandbox: SandboxControl, close: str, django_capture_on_commit_callbacks
) -> None:
    generations = _three_queued(owner)
    assert Account.objects.get(pk=owner.pk).held_micros > 0
    sandbox.clear_requests()
    with django_capture_on_commit_callbacks(execute=False):
        if close == "deactivate":
            user_set_active(user=owner, is_active=False, acting_user=None)
        else:
            user_delete(user=owner, acting_user=None)
    _assert_canceled_and_free(owner, generations)
    # Their messages are still in the queue: the worker runs them and buys nothing.
    for generation in generations:
        assert generation_run(generation_id=str(generation.pk)) is None
    _assert_canceled_and_free(owner, generations)
    assert sandbox.requests(PAYMENT) == []
    assert sandbox.requests(TOKEN) == []


def test_the_worker_cancels_work_of_an_owner_closed_behind_the_services_back(
    owner: User, sandbox: SandboxControl
) -> None:
    """An account made inactive without the service (a raw update, another program):
    the worker's start refuses it, before any credential mint or ticket."""
    generations = _three_queued(owner)
    User.objects.filter(pk=owner.pk).update(is_active=False)
    sandbox.clear_requests()
    for generation in generations:
        assert generation_run(generation_id=str(generation.pk)) is None
    _assert_canceled_and_free(owner, generations)
    assert sandbox.requests(PAYMENT) == []
    assert sandbox.requests(TOKEN) == []


def test_an_active_owners_work_still_runs(owner: User, sandbox: SandboxControl) -> None:
    (generation, *_rest) = _three_queued(owner)
    result = generation_run(generation_id=str(generation.pk))
    assert result is not None
    assert result.status == GenerationStatus.SUCCEEDED
    assert len(sandbox.requests(PAYMENT)) == 1
