from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from tests.billing.conftest import admit_generation, grant, new_generation

pytestmark = pytest.mark.django_db
MAX = 2**256 - 1


@pytest.mark.parametrize("amount", [10**30, 10**30 + 1, MAX])
def test_account_json_carries_usd_micros_as_exact_strings(
    usage_user: User, client: Client, amount: int
) -> None:
    grant(usage_user, amount)
    client.force_login(usage_user)
    body = client.get("/api/v1/billing/account").json()
    assert body["balance_micros"] == str(amount)
    assert int(body["available_micros"]) == amount
    assert body["held_micros"] == "0"
    assert body["plan_type"] == "usage"
    ledger = client.get("/api/v1/billing/ledger").json()
    assert [item["amount_micros"] for item in ledger["items"]] == [str(amount)]
    assert ledger["next_before_id"] is None


def test_ledger_json_pages_and_shows_holds(usage_user: User, client: Client) -> None:
    grant(usage_user, 10**20)
    for _ in range(3):
        admit_generation(new_generation(usage_user))
    client.force_login(usage_user)
    body = client.get("/api/v1/billing/account").json()
    assert body["held_micros"] == str(3 * 18_000)  # $0.018 each (the estimate × 6/5)
    assert body["available_micros"] == str(10**20 - 3 * 18_000)
    kinds = [item["kind"] for item in client.get("/api/v1/billing/ledger").json()["items"]]
    assert kinds == ["hold", "hold", "hold", "grant"]


def test_account_json_shows_dollars(usage_user: User, client: Client) -> None:
    grant(usage_user, 12_345_678)  # $12.345678
    client.force_login(usage_user)
    body = client.get("/api/v1/billing/account").json()
    assert (body["available_micros"], body["available"]) == ("12345678", "$12.34")


def test_billing_api_needs_a_login(client: Client) -> None:
    assert client.get("/api/v1/billing/account").status_code == 401
