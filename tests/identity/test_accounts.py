"""Accounts through allauth's pages with Django's test client."""

from __future__ import annotations

import re
import time

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.test import override_settings

from accounts.models import User
from accounts.services import user_create

pytestmark = pytest.mark.django_db

PASSWORD = "pw-signup-4821-x"
EVIL_NEXTS = ["https://evil.example/", "//evil.example", "/\\evil.example"]


@override_settings(ACCOUNT_EMAIL_VERIFICATION="mandatory")
def test_signup_verify_then_login(client, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            "/accounts/signup/",
            {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD},
        )
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    user = User.objects.get(email="new@example.com")
    assert re.fullmatch(r"usr_[0-9a-f]{32}", user.external_user_id)
    assert SESSION_KEY not in client.session  # not signed in before verifying
    assert EmailAddress.objects.get(user=user).verified is False

    # Signing in before verifying only re-sends the mail.
    refused = client.post("/accounts/login/", {"login": "new@example.com", "password": PASSWORD})
    assert refused.status_code == 302
    assert refused["Location"] == "/accounts/confirm-email/"
    assert SESSION_KEY not in client.session

    assert len(mail.outbox) >= 1
    link = re.search(r"http://testserver(/accounts/confirm-email/[^/\s]+/)", mail.outbox[0].body)
    assert link is not None
    confirm = client.post(link.group(1))
    assert confirm.status_code == 302
    assert EmailAddress.objects.get(user=user).verified is True

    response = client.post("/accounts/login/", {"login": "new@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session[SESSION_KEY] == str(user.pk)


def test_login_rotates_the_session_key_and_logout_ends_it(client) -> None:
    user_create(email="a@example.com", password=PASSWORD, email_verified=True)
    client.get("/accounts/login/")
    before = client.session.session_key
    client.post("/accounts/login/", {"login": "a@example.com", "password": PASSWORD})
    after = client.session.session_key
    assert after != before
    old_cookie = client.cookies["sessionid"].value
    client.post("/accounts/logout/")
    client.cookies["sessionid"] = old_cookie  # replaying the old cookie
    response = client.get("/generate/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def _activate_totp(client) -> str:
    # Activating a second factor needs a fresh reauthentication.
    reauth = client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    assert reauth.status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    response = client.post("/accounts/2fa/totp/activate/", {"code": code})
    assert response.status_code == 302
    return secret


def test_mfa_login_with_totp_and_with_a_recovery_code(client) -> None:
    user = user_create(email="mfa@example.com", password=PASSWORD, email_verified=True)
    client.post("/accounts/login/", {"login": "mfa@example.com", "password": PASSWORD})
    secret = _activate_totp(client)
    assert set(Authenticator.objects.filter(user=user).values_list("type", flat=True)) == {
        Authenticator.Type.TOTP,
        Authenticator.Type.RECOVERY_CODES,
    }
    client.post("/accounts/logout/")

    response = client.post("/accounts/login/", {"login": "mfa@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert SESSION_KEY not in client.session  # the password alone does not sign in
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert wrong.status_code == 200
    assert SESSION_KEY not in client.session
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    response = client.post("/accounts/2fa/authenticate/", {"code": code})
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(user.pk)

    # A recovery code works once.
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    recovery = RecoveryCodes(Authenticator.objects.get(user=user, type="recovery_codes"))
    first_code = recovery.get_unused_codes()[0]
    for expected_in in (True, False):
        client.post("/accounts/logout/")
        client.post("/accounts/login/", {"login": "mfa@example.com", "password": PASSWORD})
        client.post("/accounts/2fa/authenticate/", {"code": first_code})
        assert (SESSION_KEY in client.session) is expected_in


@pytest.mark.parametrize("evil", EVIL_NEXTS)
def test_open_redirects_through_next_go_to_the_default_page(client, evil) -> None:
    user_create(email="r@example.com", password=PASSWORD, email_verified=True)
    response = client.post(
        "/accounts/login/", {"login": "r@example.com", "password": PASSWORD, "next": evil}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    response = client.post("/accounts/logout/", {"next": evil})
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.parametrize("evil", EVIL_NEXTS)
def test_sso_next_cannot_redirect_off_site(client, sandbox, evil) -> None:
    from tests.identity import sso

    response = sso.finish(
        client, sso.authorize(client, email="ada@sandbox.pymthouse.test", next_url=evil)
    )
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_safe_next_is_kept(client) -> None:
    user_create(email="n@example.com", password=PASSWORD, email_verified=True)
    response = client.post(
        "/accounts/login/", {"login": "n@example.com", "password": PASSWORD, "next": "/gallery/"}
    )
    assert response["Location"] == "/gallery/"


ACCOUNT_PAGES = [
    "/accounts/email/",
    "/accounts/password/change/",
    "/accounts/2fa/",
    "/accounts/sessions/",
    "/accounts/3rdparty/",
]
PUBLIC_PAGES = [
    "/accounts/login/",
    "/accounts/signup/",
    "/accounts/password/reset/",
    "/accounts/oidc/pymthouse/login/",
]


def test_every_account_page_uses_the_product_layout(client) -> None:
    for path in PUBLIC_PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"/static/css/app.css" in response.content, path
        assert b'class="card auth"' in response.content, path
    login = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/oidc/pymthouse/login/?process=login"' in login
    assert "Continue with pymthouse (sandbox)" in login
    user = user_create(email="p@example.com", password=PASSWORD, email_verified=True)
    client.force_login(user)
    for path in ACCOUNT_PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert b'class="account-layout"' in response.content, path
        assert b'class="button' in response.content, path
    reauth = client.get("/accounts/2fa/totp/activate/")
    assert reauth["Location"].startswith("/accounts/reauthenticate/")
    assert b'class="card auth"' in client.get(reauth["Location"]).content


def _login(password: str = PASSWORD, email: str = "multi@example.com"):
    from django.test import Client

    browser = Client()
    response = browser.post("/accounts/login/", {"login": email, "password": password})
    assert response.status_code == 302
    return browser


def test_sign_out_elsewhere_ends_the_other_sessions_only() -> None:
    from allauth.usersessions.models import UserSession

    user = user_create(email="multi@example.com", password=PASSWORD, email_verified=True)
    laptop, phone = _login(), _login()
    assert UserSession.objects.filter(user=user).count() == 2
    response = laptop.post("/accounts/sessions/")
    assert response.status_code == 302
    assert laptop.get("/generate/").status_code == 200
    assert phone.get("/generate/").status_code == 302
    assert list(UserSession.objects.filter(user=user).values_list("session_key", flat=True)) == [
        laptop.session.session_key
    ]


def test_password_reset_by_mail(client) -> None:
    user_create(email="forgot@example.com", password=PASSWORD, email_verified=True)
    response = client.post("/accounts/password/reset/", {"email": "forgot@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[0].body)
    assert link is not None
    form = client.get(link.group(1))
    assert form.status_code == 302  # allauth moves the key out of the URL first
    new = "pw-after-reset-77x"
    done = client.post(form["Location"], {"password1": new, "password2": new})
    assert done.status_code == 302
    assert SESSION_KEY not in client.session  # ACCOUNT_LOGIN_ON_PASSWORD_RESET is off
    assert _login(new, "forgot@example.com").session[SESSION_KEY]
    # An unknown address gets the same answer (no account enumeration); the mail it
    # receives says there is no account, and carries no reset key.
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert (unknown.status_code, unknown["Location"]) == (
        response.status_code,
        response["Location"],
    )
    assert [m.to for m in mail.outbox[1:]] == [["nobody@example.com"]]
    assert "/accounts/password/reset/key/" not in mail.outbox[1].body


def test_email_change_needs_the_new_address_verified(client) -> None:
    user = user_create(email="old@example.com", password=PASSWORD, email_verified=True)
    client.force_login(user)
    response = client.post("/accounts/email/", {"action_add": "", "email": "new@example.com"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.email == "old@example.com"  # unchanged until the new address is verified
    link = re.search(r"http://testserver(/accounts/confirm-email/[^/\s]+/)", mail.outbox[-1].body)
    assert link is not None
    assert mail.outbox[-1].to == ["new@example.com"]
    client.post(link.group(1))
    user.refresh_from_db()
    assert user.email == "new@example.com"
    assert list(EmailAddress.objects.filter(user=user).values_list("email", flat=True)) == [
        "new@example.com"
    ]


def test_failed_logins_are_rate_limited(client) -> None:
    user_create(email="target@example.com", password=PASSWORD, email_verified=True)
    limited = b"Too many failed login attempts"
    answers = [
        client.post("/accounts/login/", {"login": "target@example.com", "password": "wrong"})
        for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [200] * 6  # the form again, with an error
    assert [limited in a.content for a in answers] == [False] * 5 + [True]
    # Even the right password is refused while the limit holds.
    right = client.post("/accounts/login/", {"login": "target@example.com", "password": PASSWORD})
    assert right.status_code == 200
    assert limited in right.content
    assert SESSION_KEY not in client.session
