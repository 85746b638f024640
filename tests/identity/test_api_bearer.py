"""OIDC bearer access tokens on the JSON API (mozilla-django-oidc + our iss/aud checks)."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import requests
from allauth.socialaccount.models import SocialAccount
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client, override_settings
from jwt.algorithms import RSAAlgorithm

from accounts.models import User
from accounts.services import user_create, user_set_active
from inference.models import Generation
from tests.identity import sso

pytestmark = pytest.mark.django_db

ADA = "ada@sandbox.pymthouse.test"
LIST = "/api/v1/generations"


@pytest.fixture
def ada(client, sandbox) -> User:
    """Ada signed up through SSO once (a local user linked to her pymthouse subject)."""
    sso.finish(client, sso.authorize(client, email=ADA))
    client.post("/accounts/logout/")
    return User.objects.get(email=ADA)


def _sub(sandbox, email: str) -> str:
    return next(i["sub"] for i in sandbox.oidc_identities() if i["email"] == email)


def _call(token: str, method: str = "get", path: str = LIST, **kwargs):
    return getattr(Client(enforce_csrf_checks=True), method)(
        path, HTTP_AUTHORIZATION=f"Bearer {token}", **kwargs
    )


def test_access_token_from_the_code_flow_authenticates_as_the_sso_user(
    ada, sandbox, sandbox_process, django_capture_on_commit_callbacks
) -> None:
    tokens = sso.code_flow_tokens(sandbox_process.url, ADA)
    response = _call(tokens["access_token"])
    assert response.status_code == 200
    assert response.json()["count"] == 0

    with django_capture_on_commit_callbacks(execute=False):
        created = _call(
            tokens["access_token"],
            "post",
            content_type="application/json",
            data=json.dumps({"prompt": "a red fox", "width": 512, "height": 512}),
        )
    assert created.status_code == 201, created.content  # no CSRF needed with a bearer
    generation = Generation.objects.get()
    assert generation.owner_id == ada.pk
    assert generation.owner.external_user_id == ada.external_user_id
    # The JWKS was fetched once for both calls (cached, shared with SSO's verifier).
    assert len(sandbox.requests("/api/v1/oidc/jwks")) == 1


def _unsigned(claims: dict, header: dict) -> str:
    from jwt.utils import base64url_encode

    return ".".join(
        base64url_encode(json.dumps(part).encode()).decode() for part in (header, claims)
    )


def _jwks(sandbox_process) -> dict:
    return requests.get(f"{sandbox_process.url}/api/v1/oidc/jwks", timeout=5).json()["keys"][0]


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "https://someone-else.example"},
        {"aud": ["ISSUER", "https://someone-else.example"]},
        {"iss": "https://evil.example/api/v1/oidc"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"exp": None},
    ],
    ids=["wrong-aud", "extra-aud", "wrong-iss", "expired", "no-exp"],
)
def test_validly_signed_but_wrong_tokens_are_refused(ada, sandbox, overrides) -> None:
    issuer = sandbox.config()["issuer"]
    if isinstance(overrides.get("aud"), list):
        overrides = {"aud": [issuer, overrides["aud"][1]]}
    token = sandbox.oidc_access_token(_sub(sandbox, ADA), **overrides)
    assert _call(token).status_code == 401
    good = sandbox.oidc_access_token(_sub(sandbox, ADA))
    assert _call(good).status_code == 200  # the same subject with correct claims works


def test_forged_tokens_are_refused(ada, sandbox, sandbox_process) -> None:
    issuer = sandbox.config()["issuer"]
    now = int(time.time())
    claims = {"sub": _sub(sandbox, ADA), "iss": issuer, "aud": issuer, "iat": now, "exp": now + 600}
    published = _jwks(sandbox_process)
    public_key = RSAAlgorithm.from_jwk(json.dumps(published))
    public_pem = public_key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "alg-none": _unsigned(claims, {"alg": "none", "kid": published["kid"]}) + ".",
        "hs256-public-key": _hs256(claims, public_pem, published["kid"]),
        "stranger-key-same-kid": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": published["kid"]}
        ),
        "garbage": "not-a-jwt",
    }
    for name, token in forged.items():
        response = _call(token)
        assert response.status_code == 401, name
        assert response.json() == {"detail": "Authentication required."}
        assert response["WWW-Authenticate"] == 'Bearer realm="pixelhouse"'
    assert User.objects.count() == 1


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    import hashlib
    import hmac

    from jwt.utils import base64url_encode

    unsigned = _unsigned(claims, {"alg": "HS256", "kid": kid})
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + base64url_encode(mac).decode()


def test_unknown_subject_is_refused_and_no_user_created(sandbox) -> None:
    token = sandbox.oidc_access_token(
        "b7d5c0de-0000-4000-8000-000000000001", email="new@example.com", email_verified=True
    )
    assert _call(token).status_code == 401
    assert User.objects.count() == 0


@override_settings(OIDC_API_CREATE_USERS=True)
def test_unknown_subject_is_created_when_enabled(sandbox, django_capture_on_commit_callbacks):
    sub = "b7d5c0de-0000-4000-8000-000000000002"
    token = sandbox.oidc_access_token(sub, email="new@example.com", email_verified=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert _call(token).status_code == 200
    user = User.objects.get(email="new@example.com")
    assert SocialAccount.objects.get(user=user).uid == sub
    assert {u["externalUserId"] for u in sandbox.users()} == {user.external_user_id}
    assert _call(token).status_code == 200
    assert User.objects.count() == 1


@override_settings(OIDC_API_CREATE_USERS=True)
def test_auto_creation_never_attaches_to_an_existing_email(sandbox) -> None:
    user_create(email="taken@example.com", password="pw-test-12345")
    token = sandbox.oidc_access_token(
        "b7d5c0de-0000-4000-8000-000000000003", email="taken@example.com", email_verified=True
    )
    assert _call(token).status_code == 401
    assert SocialAccount.objects.count() == 0


def test_token_signed_after_a_key_rotation_is_accepted(ada, sandbox) -> None:
    assert _call(sandbox.oidc_access_token(_sub(sandbox, ADA))).status_code == 200
    sandbox.rotate_oidc_key(keep_old=False)
    assert _call(sandbox.oidc_access_token(_sub(sandbox, ADA))).status_code == 200
    assert len(sandbox.requests("/api/v1/oidc/jwks")) == 2  # refetched on the new kid


def test_deactivated_user_token_is_refused(ada, sandbox) -> None:
    token = sandbox.oidc_access_token(_sub(sandbox, ADA))
    assert _call(token).status_code == 200
    user_set_active(user=ada, is_active=False, acting_user=None)
    assert _call(token).status_code == 401


def test_session_auth_still_works_with_csrf(ada, client) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(ada)
    assert browser.get(LIST).status_code == 200
    refused = browser.post(
        LIST,
        data=json.dumps({"prompt": "x", "width": 512, "height": 512}),
        content_type="application/json",
    )
    assert refused.status_code == 403  # ninja's session auth enforces CSRF
    assert Generation.objects.count() == 0
    assert Client().get(LIST).status_code == 401


OTHER_APP_WEB_CLIENT = "web_0123456789abcdef01234567"


@pytest.mark.parametrize(
    "client_id", [OTHER_APP_WEB_CLIENT, "app_0123456789abcdef01234567", None], ids=str
)
def test_a_token_issued_to_another_client_of_the_issuer_is_refused(ada, sandbox, client_id) -> None:
    """pymthouse signs tokens for every Builder app with one key: another app's token
    (same issuer, same audience, same user) must not spend this user's credit here."""
    token = sandbox.oidc_access_token(_sub(sandbox, ADA), client_id=client_id)
    assert _call(token).status_code == 401
    created = _call(
        token, "post", content_type="application/json",
        data=json.dumps({"prompt": "a red fox", "width": 512, "height": 512}),
    )  # fmt: skip
    # The bearer is refused: a 401 at once, never falling to session auth (and its CSRF 403).
    assert created.status_code == 401
    assert not Generation.objects.exists()


def test_a_configured_client_is_trusted(ada, sandbox, settings) -> None:
    token = sandbox.oidc_access_token(_sub(sandbox, ADA), client_id=OTHER_APP_WEB_CLIENT)
    settings.OIDC_API_TRUSTED_CLIENT_IDS = frozenset(
        {settings.SSO_PYMTHOUSE_CLIENT_ID, OTHER_APP_WEB_CLIENT}
    )
    assert _call(token).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/billing/account", "/api/v1/billing/ledger"])
def test_the_billing_api_takes_the_bearer_too(ada, sandbox, path) -> None:
    token = sandbox.oidc_access_token(_sub(sandbox, ADA))
    response = _call(token, path=path)
    assert response.status_code == 200, response.content
    assert _call("not-a-token", path=path).status_code == 401


def test_a_bearer_token_follows_its_own_generation_through_the_long_poll_and_the_stream(
    ada, sandbox, sandbox_process
) -> None:
    tokens = sso.code_flow_tokens(sandbox_process.url, ADA)
    mine = Generation.objects.create(
        owner=ada, prompt="a fox", model_id="m", width=512, height=512,
        status="succeeded", stage="done",
    )  # fmt: skip
    other = Generation.objects.create(
        owner=user_create(email="someone@example.com"), prompt="x", model_id="m",
        width=512, height=512,
    )  # fmt: skip

    answer = _call(tokens["access_token"], path=f"{LIST}/{mine.pk}/next?since=queued/queued")
    assert answer.status_code == 200
    assert answer.json()["state"] == "succeeded/done"
    stream = _call(tokens["access_token"], path=f"{LIST}/{mine.pk}/events")
    assert stream.status_code == 200
    assert stream["Content-Type"] == "text/event-stream"
    for path in (f"{LIST}/{other.pk}/next?wait=0", f"{LIST}/{other.pk}/events"):
        assert _call(tokens["access_token"], path=path).status_code == 404
    assert _call("not-a-token", path=f"{LIST}/{mine.pk}/events").status_code == 401
