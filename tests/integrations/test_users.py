"""Builder user management over HTTP Basic: upsert (the one call the product makes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings as django_settings

from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseClient,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    PymthouseProtocolError,
    PymthouseUser,
)
from tests.integrations.conftest import app_path, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

USERS = app_path("/users")


def test_upsert_creates_then_finds_the_same_row(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    first = client.upsert_user(external_user_id="py-user-001", email="a@example.test")
    second = client.upsert_user(external_user_id="py-user-001", email="a@example.test")

    assert first.created is True
    assert second.created is False
    assert second.user == first.user
    user = first.user
    assert isinstance(user, PymthouseUser)
    assert user.external_user_id == "py-user-001"
    assert user.client_id == django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID
    assert user.email == "a@example.test"
    assert user.status == "active"
    assert user.is_active is True
    assert user.role == "user"
    assert user.auto_top_up_enabled is False
    assert user.auto_top_up_usd_micros is None
    assert user.created_at is not None
    assert user.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - user.created_at).total_seconds()) < 60
    posts = calls(sandbox, "POST", USERS)
    assert [(r["status"], r["auth"], r["clientId"]) for r in posts] == [
        (201, "basic", django_settings.PYMTHOUSE_M2M_CLIENT_ID),
        (200, "basic", django_settings.PYMTHOUSE_M2M_CLIENT_ID),
    ]
    assert [u["externalUserId"] for u in sandbox.users()] == ["py-user-001"]


def test_upsert_applies_a_changed_email_and_keeps_an_inactive_status(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="u-1", email="old@example.test", status="inactive")

    again = client.upsert_user(external_user_id="u-1", email="new@example.test")

    assert again.created is False
    assert again.user.email == "new@example.test"
    assert again.user.status == "inactive"  # status omitted: left as it was
    assert again.user.is_active is False


def test_inactive_user_gets_no_user_token_until_upserted_active(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    client.upsert_user(external_user_id="py-user-002", status="inactive")

    with pytest.raises(PymthouseNotFoundError) as excinfo:
        client.mint_user_token(external_user_id="py-user-002")
    assert excinfo.value.code == "not_found"
    assert excinfo.value.description == "the provisioned user could not be resolved"

    client.upsert_user(external_user_id="py-user-002", status="active")
    assert [u["status"] for u in sandbox.users()] == ["active"]
    token = client.mint_user_token(external_user_id="py-user-002")
    assert token.scope == "sign:job"


@pytest.mark.parametrize("external_user_id", ["someone@example.test", "owner:1", "", " u-1", "a/b"])
def test_invalid_external_user_ids_are_refused_before_any_request(
    client: PymthouseClient, sandbox: SandboxControl, external_user_id: str
) -> None:
    with pytest.raises(ValueError):
        client.upsert_user(external_user_id=external_user_id)
    with pytest.raises(ValueError):
        client.mint_user_token(external_user_id=external_user_id)
    with pytest.raises(ValueError):
        client.mint_signer_session(external_user_id=external_user_id)
    with pytest.raises(ValueError):
        client.balance(external_user_id=external_user_id)
    assert sandbox.requests() == []


def test_invalid_status_is_refused_before_any_request(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    with pytest.raises(ValueError):
        client.upsert_user(external_user_id="u-1", status="suspended")  # type: ignore[arg-type]
    assert sandbox.requests() == []


def test_wrong_secret_is_an_auth_error(sandbox: SandboxControl, settings: Any) -> None:
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = "pmth_cs_" + "0" * 64
    client = PymthouseClient.from_settings()

    with pytest.raises(PymthouseAuthError) as excinfo:
        client.upsert_user(external_user_id="u-1")

    error = excinfo.value
    assert (error.status, error.code, error.description) == (401, None, "Unauthorized")
    assert error.retryable is False
    assert sandbox.users() == []
    assert len(calls(sandbox, "POST", USERS)) == 1


def test_extra_keys_are_tolerated_but_required_keys_are_not_optional(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    row = {
        "id": "36a18de3-d896-4bb4-b223-c868a3805c1a",
        "clientId": django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
        "externalUserId": "u-1",
        "email": None,
        "status": "active",
        "someFutureColumn": {"nested": True},
        "createdAt": "2026-11-26T19:22:47.123Z",
    }
    sandbox.add_fault("POST", USERS, status=201, body=row, times=1)
    created = client.upsert_user(external_user_id="u-1")
    assert created.created is True
    assert created.user.id == "36a18de3-d896-4bb4-b223-c868a3805c1a"
    assert created.user.created_at == datetime(2026, 11, 26, 19, 22, 47, 123000, tzinfo=UTC)

    sandbox.add_fault("POST", USERS, status=200, body={k: v for k, v in row.items() if k != "id"})
    with pytest.raises(PymthouseProtocolError) as excinfo:
        client.upsert_user(external_user_id="u-1")
    assert "id" in str(excinfo.value)


def test_upsert_money_field_must_be_an_integer_string(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    row = {
        "id": "x",
        "clientId": django_settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
        "externalUserId": "u-1",
        "status": "active",
        "autoTopUpUsdMicros": 1.5,
    }
    sandbox.add_fault("POST", USERS, status=200, body=row)
    with pytest.raises(PymthouseProtocolError):
        client.upsert_user(external_user_id="u-1")


def test_other_4xx_bodies_map_to_bad_request(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault(
        "POST", USERS, status=400, body={"error": "status must be one of: active, inactive"}
    )
    with pytest.raises(PymthouseBadRequestError) as excinfo:
        client.upsert_user(external_user_id="u-1")
    assert excinfo.value.status == 400
    assert excinfo.value.code is None
    assert excinfo.value.description == "status must be one of: active, inactive"


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (403, "end_user_cap_reached", PymthouseAuthError),
        (402, "owner_payment_method_required", PymthouseInsufficientFundsError),
    ],
)
def test_activation_gate_problem_json_is_parsed(
    client: PymthouseClient,
    sandbox: SandboxControl,
    status: int,
    code: str,
    error_class: type[Exception],
) -> None:
    problem = {
        "type": "https://pymthouse.com/problems/app-not-activated",
        "title": "App cannot provision end users",
        "status": status,
        "code": code,
        "billingMode": "owner_rollup",
        "actionUrl": "https://pymthouse.com/apps",
        "correlation_id": "5f9a1c3e-0000-4000-8000-000000000001",
        "detail": "The app has reached its end-user cap.",
    }
    sandbox.add_fault(
        "POST",
        USERS,
        status=status,
        body=problem,
        headers={"Content-Type": "application/problem+json"},
    )

    with pytest.raises(error_class) as excinfo:
        client.upsert_user(external_user_id="u-1")

    error = excinfo.value
    assert getattr(error, "status", None) == status
    assert getattr(error, "code", None) == code
    assert getattr(error, "description", None) == "The app has reached its end-user cap."
    assert getattr(error, "correlation_id", None) == "5f9a1c3e-0000-4000-8000-000000000001"
