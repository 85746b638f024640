"""Browser SSO through allauth's openid_connect provider against the sandbox OP (loopback)."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.test import override_settings

from accounts.models import ProvisioningStatus, User
from accounts.services import user_create
from tests.identity import sso

pytestmark = pytest.mark.django_db

ADA = "ada@sandbox.pymthouse.test"
GRACE = "grace@sandbox.pymthouse.test"
LINUS = "linus@sandbox.pymthouse.test"


def _identity(sandbox, email: str) -> dict:
    return next(i for i in sandbox.oidc_identities() if i["email"] == email)


def _assert_refused(client, response) -> None:
    assert response.status_code == 401  # allauth's "Third-Party Login Failure" page
    assert b"Login Failure" in response.content
    assert SESSION_KEY not in client.session
    assert User.objects.count() == 0
    assert SocialAccount.objects.count() == 0


def test_sso_login_creates_a_provisioned_user_with_its_own_external_id(
    client, sandbox, django_capture_on_commit_callbacks
) -> None:
    client.get("/accounts/login/")
    session_before = client.session.session_key
    authorization = sso.authorize(client, email=ADA)

    # PKCE S256 with a fresh challenge, a state and a nonce on every attempt.
    assert authorization.params["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", authorization.params["code_challenge"])
    assert len(authorization.params["nonce"]) >= 32
    assert authorization.params["state"]
    assert authorization.params["client_id"] == "web_b50c8e3d43c6d3641cae2e66"
    assert sorted(authorization.params["scope"].split()) == ["email", "openid", "profile"]
    second, second_params = sso.start(client)
    assert second_params["code_challenge"] != authorization.params["code_challenge"]
    assert second_params["nonce"] != authorization.params["nonce"]

    with django_capture_on_commit_callbacks(execute=True):
        response = sso.finish(client, authorization)

    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(email=ADA)
    assert client.session[SESSION_KEY] == str(user.pk)
    assert client.session.session_key != session_before  # rotated on login
    assert re.fullmatch(r"usr_[0-9a-f]{32}", user.external_user_id)
    assert not user.has_usable_password()
    account = SocialAccount.objects.get(user=user)
    assert (account.provider, account.uid) == ("pymthouse", _identity(sandbox, ADA)["sub"])
    user.refresh_from_db()
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED
    upstream = {u["externalUserId"]: u for u in sandbox.users()}
    assert upstream[user.external_user_id]["email"] == ADA
    # The token request went to the sandbox with Basic client auth, userinfo was not used.
    token_calls = sandbox.requests("/api/v1/oidc/token")
    assert [(c["auth"], c["clientId"], c["status"]) for c in token_calls] == [
        ("basic", "web_b50c8e3d43c6d3641cae2e66", 200)
    ]
    assert sandbox.requests("/api/v1/oidc/me") == []


def test_second_sso_login_maps_to_the_same_user(client, sandbox) -> None:
    sso.finish(client, sso.authorize(client, email=GRACE))
    first = User.objects.get(email=GRACE)
    client.post("/accounts/logout/")
    assert SESSION_KEY not in client.session
    response = sso.finish(client, sso.authorize(client, email=GRACE))
    assert response.status_code == 302
    assert User.objects.count() == 1
    assert client.session[SESSION_KEY] == str(first.pk)
    assert User.objects.get().external_user_id == first.external_user_id


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong_aud", "token audience is not ours"),
        ("extra_aud", "token names audiences we do not trust"),
        ("wrong_iss", "token issuer is not the configured issuer"),
        ("bad_nonce", "token nonce does not match the one sent"),
        ("missing_nonce", "token nonce does not match the one sent"),
        ("expired", "token expired"),
        ("alg_none", "signing algorithm 'none' is not accepted"),
        ("hs256_public_key", "signing algorithm 'HS256' is not accepted"),
        ("unknown_kid", "token signed with a key that is not in the issuer's JWKS"),
    ],
)
def test_bad_id_token_is_refused_without_session_or_user(
    client, sandbox, caplog, mode, reason
) -> None:
    sandbox.oidc_misbehave(mode, times=1)
    authorization = sso.authorize(client, email=ADA)
    with caplog.at_level("DEBUG"):
        response = sso.finish(client, authorization)
    _assert_refused(client, response)
    # The refusal is logged with its reason, never with the token (JWTs start "eyJ").
    assert not any("eyJ" in record.getMessage() for record in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.name == "accounts.sso.adapter"] == [
        f"SSO via pymthouse refused: {reason}"
    ]
    # The token endpoint was reached: the refusal is ours, not the OP's.
    assert [c["status"] for c in sandbox.requests("/api/v1/oidc/token")] == [200]


def test_replayed_callback_is_refused(client, sandbox) -> None:
    authorization = sso.authorize(client, email=ADA)
    assert sso.finish(client, authorization).status_code == 302
    client.post("/accounts/logout/")
    users_before = list(User.objects.values_list("pk", flat=True))
    response = sso.finish(client, authorization)  # same code and state, state consumed
    assert response.status_code == 401  # allauth's "Third-Party Login Failure" page
    assert b"Login Failure" in response.content
    assert SESSION_KEY not in client.session
    # Nobody new, nothing linked again (users are never deleted: billing keeps them).
    assert list(User.objects.values_list("pk", flat=True)) == users_before
    assert SocialAccount.objects.count() == 1
    assert len(sandbox.requests("/api/v1/oidc/token")) == 1  # no second code exchange


def test_callback_from_another_browser_is_refused(client, sandbox) -> None:
    """Login CSRF: a callback whose state was never issued to this session."""
    from django.test import Client

    victim = Client()
    authorization = sso.authorize(client, email=ADA)
    response = sso.finish(victim, authorization)
    assert SESSION_KEY not in victim.session
    assert User.objects.count() == 0
    assert sandbox.requests("/api/v1/oidc/token") == []
    assert response.status_code == 401


def test_callback_naming_another_issuer_is_refused(client, sandbox) -> None:
    authorization = sso.authorize(client, email=ADA)
    authorization.callback = re.sub(
        r"iss=[^&]+", "iss=https%3A%2F%2Fevil.example%2Fapi%2Fv1%2Foidc", authorization.callback
    )
    response = sso.finish(client, authorization)
    _assert_refused(client, response)
    assert sandbox.requests("/api/v1/oidc/token") == []


def test_discovery_naming_another_issuer_is_refused(client, sandbox) -> None:
    document = {
        "issuer": "https://evil.example/api/v1/oidc",
        "authorization_endpoint": "https://evil.example/api/v1/oidc/auth",
        "token_endpoint": "https://evil.example/api/v1/oidc/token",
        "jwks_uri": "https://evil.example/api/v1/oidc/jwks",
    }
    sandbox.add_fault(
        "GET", "/api/v1/oidc/.well-known/openid-configuration", status=200, body=document
    )
    response = client.post(sso.LOGIN_PATH)
    assert response.status_code == 401  # allauth's error page, no redirect anywhere
    assert "Location" not in response
    assert SESSION_KEY not in client.session


def test_key_rotation_is_followed(client, sandbox) -> None:
    sso.finish(client, sso.authorize(client, email=ADA))  # JWKS now cached
    client.post("/accounts/logout/")
    sandbox.rotate_oidc_key(keep_old=False)
    response = sso.finish(client, sso.authorize(client, email=ADA))
    assert response.status_code == 302
    assert SESSION_KEY in client.session
    assert len(sandbox.requests("/api/v1/oidc/jwks")) == 2  # refetched on the unknown kid


def test_verified_email_of_an_existing_account_does_not_log_in(client, sandbox) -> None:
    """Account-linking attack: the IdP vouches for an address someone here already owns."""
    owner = user_create(email=ADA, password="pw-owner-12345", email_verified=True)
    response = sso.finish(client, sso.authorize(client, email=ADA))
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert SESSION_KEY not in client.session
    assert list(User.objects.values_list("pk", flat=True)) == [owner.pk]
    assert SocialAccount.objects.count() == 0
    page = client.get("/accounts/login/")
    assert b"Sign in to it first" in page.content

    # The owner signs in, then links the provider from their account.
    assert (
        client.post("/accounts/login/", {"login": ADA, "password": "pw-owner-12345"}).status_code
        == 302
    )
    response = client.post(sso.LOGIN_PATH, {"process": "connect"})
    assert response.status_code == 302
    response = client.get(sso.pick_identity(response["Location"], ADA))
    assert response.status_code == 302
    account = SocialAccount.objects.get()
    assert account.user_id == owner.pk
    assert account.uid == _identity(sandbox, ADA)["sub"]

    # From now on SSO signs into the owner's account.
    client.post("/accounts/logout/")
    sso.finish(client, sso.authorize(client, email=ADA))
    assert client.session[SESSION_KEY] == str(owner.pk)
    assert User.objects.count() == 1


def test_a_provider_added_in_the_admin_gets_a_button_and_signs_in(client, sandbox) -> None:
    import json

    from django.test import Client

    from tests.identity.sso import WEB_CLIENT_ID, WEB_CLIENT_SECRET

    staff = Client()
    staff.force_login(user_create(email="ops@example.com", is_staff=True, is_superuser=True))
    issuer = sandbox.config()["issuer"]
    response = staff.post(
        "/admin/socialaccount/socialapp/add/",
        {
            "provider": "openid_connect",
            "provider_id": "corp",
            "name": "Corp SSO",
            "client_id": WEB_CLIENT_ID,
            "secret": WEB_CLIENT_SECRET,
            "key": "",
            "settings": json.dumps({"server_url": issuer}),
        },
    )
    assert response.status_code == 302, response.content[:3000]
    assert b"Continue with Corp SSO" in client.get("/accounts/login/").content

    start = client.post("/accounts/oidc/corp/login/")
    assert start.status_code == 302
    callback = sso.pick_identity(start["Location"], GRACE)
    assert callback.startswith("/accounts/oidc/corp/login/callback/?")
    assert "code_challenge_method=S256" in start["Location"]
    response = client.get(callback)
    assert response.status_code == 302
    user = User.objects.get(email=GRACE)
    assert client.session[SESSION_KEY] == str(user.pk)
    assert SocialAccount.objects.get(user=user).provider == "corp"


@override_settings(
    ACCOUNT_EMAIL_VERIFICATION="mandatory", SOCIALACCOUNT_EMAIL_VERIFICATION="mandatory"
)
def test_an_address_the_idp_did_not_verify_is_verified_by_mail_first(client, sandbox) -> None:
    response = sso.finish(client, sso.authorize(client, email=LINUS))
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert SESSION_KEY not in client.session
    user = User.objects.get(email=LINUS)
    assert EmailAddress.objects.get(user=user).verified is False
    assert [m.to for m in mail.outbox] == [[LINUS]]
    # A verified address from the IdP signs in straight away under the same settings.
    response = sso.finish(client, sso.authorize(client, email=ADA))
    assert response["Location"] == "/"
    assert client.session[SESSION_KEY] == str(User.objects.get(email=ADA).pk)


def test_provider_unreachable_at_callback_time_is_a_login_failure(client, sandbox) -> None:
    from tests.conftest import clear_cache

    authorization = sso.authorize(client, email=ADA)
    clear_cache()  # discovery must be fetched again, and the provider is now failing
    sandbox.add_fault("GET", "/api/v1/oidc/.well-known/openid-configuration", status=503)
    response = sso.finish(client, authorization)
    _assert_refused(client, response)
    assert sandbox.requests("/api/v1/oidc/token") == []
