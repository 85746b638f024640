"""Deactivation, deletion and reactivation end sessions, follow at pymthouse, keep history."""

from __future__ import annotations

import pytest
from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount
from allauth.usersessions.models import UserSession
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse

from accounts.models import User
from accounts.services import user_create, user_set_active
from inference.models import Generation
from tests.identity import sso

pytestmark = pytest.mark.django_db
PASSWORD = "pw-member-5521"


def _status_upstream(sandbox, user: User) -> str:
    return {u["externalUserId"]: u["status"] for u in sandbox.users()}[user.external_user_id]


@pytest.fixture
def staff(django_capture_on_commit_callbacks) -> Client:
    with django_capture_on_commit_callbacks(execute=True):
        admin_user = user_create(
            email="staff@example.com",
            password=PASSWORD,
            is_staff=True,
            is_superuser=True,
            email_verified=True,
        )
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def member(sandbox, django_capture_on_commit_callbacks) -> tuple[User, Client]:
    with django_capture_on_commit_callbacks(execute=True):
        user = user_create(email="member@example.com", password=PASSWORD, email_verified=True)
    browser = Client()
    response = browser.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert browser.get("/generate/").status_code == 200
    return user, browser


def test_deactivation_ends_sessions_and_follows_upstream_then_reactivation_restores(
    sandbox, staff, member, django_capture_on_commit_callbacks
) -> None:
    user, browser = member
    assert UserSession.objects.filter(user=user).count() == 1
    assert _status_upstream(sandbox, user) == "active"

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            reverse("admin:accounts_user_changelist"),
            {"action": "deactivate_users", "_selected_action": [user.pk]},
        )
    assert response.status_code == 302
    response = browser.get("/generate/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert UserSession.objects.filter(user=user).count() == 0
    assert _status_upstream(sandbox, user) == "inactive"
    refused = browser.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert SESSION_KEY not in browser.session
    assert refused.status_code == 302
    assert refused["Location"] == "/accounts/inactive/"

    with django_capture_on_commit_callbacks(execute=True):
        staff.post(
            reverse("admin:accounts_user_changelist"),
            {"action": "reactivate_users", "_selected_action": [user.pk]},
        )
    assert _status_upstream(sandbox, user) == "active"
    browser.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert browser.session[SESSION_KEY] == str(user.pk)


def test_deleting_keeps_history_scrubs_identity_and_deactivates_upstream(
    sandbox, staff, member, django_capture_on_commit_callbacks
) -> None:
    user, browser = member
    external_user_id = user.external_user_id
    generation = Generation.objects.create(
        owner=user, prompt="kept", model_id="ByteDance/SDXL-Lightning", width=512, height=512
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            reverse("admin:accounts_user_delete", args=[user.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.deleted_at is not None
    assert user.is_active is False
    assert user.email == f"deleted-{external_user_id}@deleted.invalid"
    assert user.external_user_id == external_user_id
    assert not user.has_usable_password()
    assert Generation.objects.get(pk=generation.pk).owner_id == user.pk  # history kept
    assert browser.get("/generate/").status_code == 302
    assert _status_upstream(sandbox, user) == "inactive"
    with pytest.raises(ValueError, match="deleted user cannot be reactivated"):
        user_set_active(user=user, is_active=True, acting_user=None)


def test_admin_shows_identity_state(sandbox, staff) -> None:
    browser = Client()
    sso.finish(browser, sso.authorize(browser, email="grace@sandbox.pymthouse.test"))
    user = User.objects.get(email="grace@sandbox.pymthouse.test")
    account = SocialAccount.objects.get(user=user)
    Authenticator.objects.create(user=user, type=Authenticator.Type.TOTP, data={})
    page = staff.get(reverse("admin:accounts_user_change", args=[user.pk])).content.decode()
    assert f"pymthouse ({account.uid})" in page
    assert user.external_user_id in page
    assert "Provisioning status" in page
    assert 'alt="True"' in page  # MFA on
    changelist = staff.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "MFA" in changelist
