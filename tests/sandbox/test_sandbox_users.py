"""Builder users (/users) and user-token minting (/users/{ext}/token)."""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.sandbox.helpers import APP_ID, BASIC, M2M_ID, claims, jose_header, provision
from tests.sandbox_server import SandboxControl

ROW_KEYS = [
    "id", "clientId", "externalUserId", "email", "depositWalletAddress", "status", "role",
    "autoTopUpEnabled", "autoTopUpUsdMicros", "createdAt",
]  # fmt: skip


def users_url(base: str, app: str = APP_ID) -> str:
    return f"{base}/api/v1/apps/{app}/users"


def m2m_access_token(http: requests.Session, base: str) -> str:
    response = http.post(
        f"{base}/api/v1/oidc/token",
        auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "users:read users:write users:token"},
    )
    token: str = response.json()["access_token"]
    return token


def test_upsert_is_201_then_200_with_the_same_row(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    payload = {
        "externalUserId": "py-user-001",
        "email": "py-user-001@example.test",
        "status": "active",
    }
    first = http.post(users_url(base), auth=BASIC, json=payload)
    assert first.status_code == 201
    assert first.headers["content-type"] == "application/json"
    row = first.json()
    assert list(row) == ROW_KEYS
    assert uuid.UUID(row["id"]).version == 4
    assert row["clientId"] == APP_ID
    assert row["externalUserId"] == "py-user-001"
    assert row["email"] == "py-user-001@example.test"
    assert row["depositWalletAddress"] is None
    assert row["status"] == "active"
    assert row["role"] == "user"
    assert row["autoTopUpEnabled"] is False
    assert row["autoTopUpUsdMicros"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["createdAt"])

    second = http.post(users_url(base), auth=BASIC, json=payload)
    assert second.status_code == 200
    assert second.json() == row
    assert control.users()[0]["balanceUsdMicros"] == "5000000"


def test_upsert_updates_email_only_when_a_string_and_keeps_status(
    http: requests.Session, base: str
) -> None:
    provision(http, base, "u1", email="a@example.test")
    changed = http.post(
        users_url(base), auth=BASIC, json={"externalUserId": "u1", "email": "b@x.test"}
    )
    assert (changed.status_code, changed.json()["email"]) == (200, "b@x.test")
    kept = http.post(users_url(base), auth=BASIC, json={"externalUserId": "u1", "email": None})
    assert kept.json()["email"] == "b@x.test"

    http.delete(users_url(base), auth=BASIC, params={"externalUserId": "u1"})
    still_inactive = http.post(users_url(base), auth=BASIC, json={"externalUserId": "  u1  "})
    assert (still_inactive.status_code, still_inactive.json()["status"]) == (200, "inactive")
    reactivated = http.post(
        users_url(base), auth=BASIC, json={"externalUserId": "u1", "status": "active"}
    )
    assert reactivated.json()["status"] == "active"


def test_email_shaped_external_id_is_accepted(http: requests.Session, base: str) -> None:
    response = http.post(
        users_url(base), auth=BASIC, json={"externalUserId": "someone@example.test"}
    )
    assert response.status_code == 201
    assert response.json()["email"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"externalUserId":', "Invalid JSON"),
        ('{"email":"x@example.test"}', "externalUserId is required"),
        ('{"external_id":"u"}', "externalUserId is required"),
        ('{"externalUserId":"   "}', "externalUserId is required"),
        ('{"externalUserId":"u","status":"suspended"}', "status must be one of: active, inactive"),
    ],
)
def test_upsert_errors(http: requests.Session, base: str, body: str, message: str) -> None:
    response = http.post(
        users_url(base), auth=BASIC, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_list_put_delete(http: requests.Session, base: str) -> None:
    provision(http, base, "u1", email="u1@example.test")
    provision(http, base, "u2")
    listing = http.get(users_url(base), auth=BASIC)
    assert listing.status_code == 200
    assert [row["externalUserId"] for row in listing.json()["users"]] == ["u1", "u2"]

    deleted = http.delete(users_url(base), auth=BASIC, params={"externalUserId": "u2"})
    assert deleted.status_code == 200
    body = deleted.json()
    assert list(body) == ["success", "status", "correlation_id"]
    assert (body["success"], body["status"]) == (True, "inactive")
    assert uuid.UUID(body["correlation_id"])
    statuses = {
        row["externalUserId"]: row["status"]
        for row in http.get(users_url(base), auth=BASIC).json()["users"]
    }
    assert statuses == {"u1": "active", "u2": "inactive"}

    put = http.put(users_url(base), auth=BASIC, json={"externalUserId": "u2", "status": "active"})
    assert (put.status_code, put.json()) == (200, {"success": True})
    put = http.put(users_url(base), auth=BASIC, json={"externalUserId": "nobody"})
    assert (put.status_code, put.json()) == (404, {"error": "User not found"})
    gone = http.delete(users_url(base), auth=BASIC, params={"externalUserId": "nobody"})
    assert (gone.status_code, gone.json()) == (404, {"error": "User not found"})
    missing = http.delete(users_url(base), auth=BASIC)
    assert (missing.status_code, missing.json()) == (400, {"error": "externalUserId is required"})


def test_users_auth(http: requests.Session, base: str) -> None:
    token = m2m_access_token(http, base)
    bearer = {"Authorization": f"Bearer {token}"}
    unauthorized = {"error": "Unauthorized"}

    response = http.post(users_url(base), headers=bearer, json={"externalUserId": "u1"})
    assert (response.status_code, response.json()) == (401, unauthorized)
    response = http.get(users_url(base), headers=bearer)
    assert (response.status_code, response.json()) == (401, unauthorized)
    response = http.get(users_url(base), auth=(M2M_ID, "wrong"))
    assert (response.status_code, response.json()) == (401, unauthorized)
    response = http.get(users_url(base, "app_a48e23c27a31a63d0b4996f2"), auth=BASIC)
    assert (response.status_code, response.json()) == (401, unauthorized)
    response = http.get(users_url(base))
    assert (response.status_code, response.json()) == (401, unauthorized)

    # The recorded quirk: an M2M Bearer works with the m2m_ id in the path and echoes it.
    created = http.post(users_url(base, M2M_ID), headers=bearer, json={"externalUserId": "u2"})
    assert created.status_code == 201
    assert created.json()["clientId"] == M2M_ID
    listed = http.get(users_url(base), auth=BASIC).json()["users"]
    assert [(row["externalUserId"], row["clientId"]) for row in listed] == [("u2", APP_ID)]


def token_url(base: str, external_user_id: str, app: str = APP_ID) -> str:
    return f"{base}/api/v1/apps/{app}/users/{external_user_id}/token"


def test_user_token_default_scope(http: requests.Session, base: str) -> None:
    row = provision(http, base, "py-user-001")
    response = http.post(token_url(base, "py-user-001"), auth=BASIC)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == [
        "access_token", "refresh_token", "token_type", "expires_in", "scope", "subject_type",
        "correlation_id",
    ]  # fmt: skip
    assert re.fullmatch(r"pmth_[0-9a-f]{64}", body["refresh_token"])
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 900, "sign:job")
    assert body["subject_type"] == "app_user"
    assert uuid.UUID(body["correlation_id"])
    assert list(jose_header(body["access_token"])) == ["alg", "kid", "typ"]
    token_claims = claims(body["access_token"])
    assert token_claims["sub"] == row["id"]
    assert token_claims["client_id"] == APP_ID
    assert token_claims["external_user_id"] == "py-user-001"
    assert token_claims["user_type"] == "app_user"
    assert token_claims["scope"] == "sign:job"
    assert token_claims["scp"] == ["sign:job"]
    assert token_claims["iss"] == token_claims["aud"] == f"{base}/api/v1/oidc"
    assert token_claims["exp"] - token_claims["iat"] == 900


@pytest.mark.parametrize(
    ("scope", "description"),
    [
        (
            "sign:job users:read",
            "sign:job cannot be combined with administrative scopes in the same token",
        ),
        ("admin", "requested scope is not allowed for this client"),
        ("inference", "requested scope is not allowed for this client"),
    ],
)
def test_user_token_scope_errors(
    http: requests.Session, base: str, scope: str, description: str
) -> None:
    provision(http, base, "u1")
    response = http.post(token_url(base, "u1"), auth=BASIC, json={"scope": scope})
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["error", "error_description", "correlation_id"]
    assert (body["error"], body["error_description"]) == ("invalid_scope", description)


def test_user_token_errors(http: requests.Session, base: str) -> None:
    provision(http, base, "u1")
    not_found = ("not_found", "the provisioned user could not be resolved")

    response = http.post(token_url(base, "nobody-xyz"), auth=BASIC)
    assert response.status_code == 404
    assert (response.json()["error"], response.json()["error_description"]) == not_found

    http.delete(users_url(base), auth=BASIC, params={"externalUserId": "u1"})
    response = http.post(token_url(base, "u1"), auth=BASIC)
    assert response.status_code == 404
    assert (response.json()["error"], response.json()["error_description"]) == not_found

    response = http.post(
        token_url(base, "u1"), headers={"Authorization": f"Bearer {m2m_access_token(http, base)}"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"] == "failed confidential-client authentication"
    assert http.post(token_url(base, "u1"), auth=(M2M_ID, "nope")).status_code == 401

    response = http.post(token_url(base, "u1", app="app_a48e23c27a31a63d0b4996f2"), auth=BASIC)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"

    response = http.post(token_url(base, "u1"), auth=BASIC, json={"scope": ""})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
