"""Low balance: one mail per downward threshold crossing ($5, then $1), re-armed by a
credit, never twice under concurrent settlements, none for a user who starts below; the
notice on /generate/ and /billing/ with its Add credit link, and the API field."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test import Client

from accounts.models import User
from billing.models import Account, Plan
from billing.services import (
    account_change_plan,
    credit_deduct,
    hold_release,
    promotion_grant,
)
from tests.billing.conftest import (
    account_of,
    admit_generation,
    assert_ledger_matches,
    charge_at_payment,
    grant,
    new_generation,
    usage_settle,
)

#: The sandbox runner's fee per call, its pay-as-you-go charge, the hold before any
#: price is observed (18,000 µ$), and the estimate that hold covers.
FEE = 4_768_371_000_000
CHARGE = 17_167
HOLD = 18_000
ESTIMATE = 5_000_000_000_000


def deduct(user: User, amount: int, key: str) -> None:
    credit_deduct(
        user=user, amount_micros=amount, reason="test", acting_user=None, idempotency_key=key
    )


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


@pytest.mark.django_db
def test_one_mail_per_crossing_and_a_credit_re_arms(
    usage_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    grant(usage_user, 5_010_000)
    with django_capture_on_commit_callbacks(execute=True):
        generation = new_generation(usage_user)
        admit_generation(generation)  # 4,992,000 available: below $5
    assert subjects() == ["Your pixelhouse credit is below $5.00"]
    assert [message.to for message in mail.outbox] == [[usage_user.email]]
    assert "$4.99 available, below $5.00" in mail.outbox[0].body
    assert "/billing/credit/" in mail.outbox[0].body
    account = account_of(usage_user)
    assert account.low_balance_notified_micros == 5_000_000
    assert account.low_balance_notified_at is not None

    with django_capture_on_commit_callbacks(execute=True):
        # The hold comes back (not a top-up: re-arms nothing) and the charge is taken.
        charge_at_payment(generation_id=generation.pk, expected_fee_wei=FEE)
        deduct(usage_user, 3_000_000, "d1")  # 1,992,833: still above $1
    assert len(mail.outbox) == 1

    with django_capture_on_commit_callbacks(execute=True):
        deduct(usage_user, 1_000_000, "d2")  # 992,833: below $1
    assert subjects()[1:] == ["Your pixelhouse credit is below $1.00"]
    assert "$0.99 available, below $1.00" in mail.outbox[1].body
    assert account_of(usage_user).low_balance_notified_micros == 1_000_000

    with django_capture_on_commit_callbacks(execute=True):
        grant(usage_user, 2_000_000, key="top-up")  # 2,992,833: $1 re-armed, $5 not
        deduct(usage_user, 2_000_000, "d3")  # 992,833 again: below $1 again
    assert subjects()[2:] == ["Your pixelhouse credit is below $1.00"]

    with django_capture_on_commit_callbacks(execute=True):
        promotion_grant(
            user=usage_user,
            amount_micros=10_000_000,
            reason="welcome back",
            acting_user=None,
            idempotency_key="p",
        )  # 10,992,833: every threshold re-armed
        assert account_of(usage_user).low_balance_notified_micros is None
        deduct(usage_user, 10_992_833, "d4")  # 0: crosses $5 and $1 at once: one mail
    assert subjects()[3:] == ["You're out of pixelhouse credit"]
    assert "You have no pixelhouse credit left ($0.00 available)" in mail.outbox[3].body
    assert len(mail.outbox) == 4
    assert_ledger_matches(usage_user)


@pytest.mark.django_db
def test_no_mail_for_a_user_who_starts_below_a_threshold(
    usage_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        grant(usage_user, 3_000_000)  # signs up with $3: below $5 from the start
        admit_generation(new_generation(usage_user))  # 2,982,000: crossed nothing
        deduct(usage_user, 1_900_000, "d")  # 1,082,000
    assert mail.outbox == []
    assert account_of(usage_user).low_balance_notified_micros is None
    with django_capture_on_commit_callbacks(execute=True):
        deduct(usage_user, 100_000, "d2")  # 982,000: crosses $1
    assert subjects() == ["Your pixelhouse credit is below $1.00"]


@pytest.mark.django_db
def test_plans_without_credit_get_no_mail(
    make_user: Any, plans: dict[str, Plan], django_capture_on_commit_callbacks: Any
) -> None:
    user = make_user()  # the free plan
    with django_capture_on_commit_callbacks(execute=True):
        grant(user, 6_000_000)
        deduct(user, 5_500_000, "d")
    assert mail.outbox == []


@pytest.mark.django_db
def test_no_mail_leaves_when_the_transaction_rolls_back(
    usage_user: User, django_capture_on_commit_callbacks: Any
) -> None:
    grant(usage_user, 5_010_000)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deduct(usage_user, 20_000, "d")
    assert len(callbacks) == 1  # scheduled for after commit, not sent inline
    assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_settlements_crossing_the_same_threshold_mail_once() -> None:
    """Both charges of images whose holds had timed out land at once (the usage mirror's
    metered fee): each takes 18,000 from 5,010,000, the first crosses $5, the second sees
    the state the first wrote under the account lock."""
    user = User.objects.create(email="twice@example.com")
    account_change_plan(
        user=user, plan=Plan.objects.get(slug="pay-as-you-go"), acting_user=None, reason="t"
    )
    grant(user, 5_028_000)
    generations = []
    for _ in range(2):
        with transaction.atomic():  # as generation_create
            generation = new_generation(user)
            admit_generation(generation)  # 5,010,000 available while held: above $5
        hold_release(generation_id=generation.pk, reason="timed out")
        generations.append(generation)
    deduct(user, 18_000, "to-5010000")
    assert account_of(user).available_micros == 5_010_000
    assert mail.outbox == []

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def settle(generation_id: Any) -> None:
        try:
            barrier.wait(10)
            usage_settle(
                generation_id=generation_id, fee_wei=ESTIMATE, usage_ref=f"manifest:{generation_id}"
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=settle, args=(g.pk,)) for g in generations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    account = Account.objects.get(pk=user.pk)
    assert account.available_micros == 5_010_000 - 2 * HOLD
    assert account.low_balance_notified_micros == 5_000_000
    assert subjects() == ["Your pixelhouse credit is below $5.00"]
    assert_ledger_matches(user)


@pytest.mark.django_db
def test_generate_billing_and_api_show_the_low_balance(usage_user: User, client: Client) -> None:
    client.force_login(usage_user)
    grant(usage_user, 6_000_000)
    assert "data-low-balance" not in client.get("/generate/").content.decode()
    assert client.get("/api/v1/billing/account").json()["low_balance"] is None

    deduct(usage_user, 1_750_000, "d")  # $4.25
    generate = client.get("/generate/").content.decode()
    assert 'data-low-balance-available="4250000"' in generate
    assert "$4.25</span> available (below $5.00)" in generate
    assert '<a href="/billing/credit/" data-add-credit>Add credit</a>' in generate
    billing = client.get("/billing/").content.decode()
    assert 'data-low-balance-available="4250000"' in billing
    assert '<a href="/billing/credit/">Add credit</a>' in billing
    assert client.get("/api/v1/billing/account").json()["low_balance"] == {
        "threshold_micros": "5000000",
        "available_micros": "4250000",
    }
    deduct(usage_user, 4_000_000, "d2")  # $0.25
    assert client.get("/api/v1/billing/account").json()["low_balance"] == {
        "threshold_micros": "1000000",
        "available_micros": "250000",
    }
    placeholder = client.get("/billing/credit/").content.decode()
    assert "data-credit-add-placeholder" in placeholder
    assert "$0.25" in placeholder


@pytest.mark.django_db
def test_free_plan_generate_page_has_no_low_balance_notice(
    make_user: Any, plans: dict[str, Plan], client: Client
) -> None:
    user = make_user()
    client.force_login(user)
    assert "data-low-balance" not in client.get("/generate/").content.decode()
    assert client.get("/api/v1/billing/account").json()["low_balance"] is None
