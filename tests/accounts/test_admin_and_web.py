from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import ProvisioningStatus, User
from billing.models import PromotionalCredit
from tests.factories import UserFactory
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


def test_web_root_and_health_answer_200(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b"Create an account" in response.content
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


def test_signup_through_allauth_provisions_the_user(
    client, sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("account_signup"),
            {
                "email": "new@example.com",
                "password1": "a-Long-pass-123",
                "password2": "a-Long-pass-123",
            },
        )
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED
    assert [u["externalUserId"] for u in sandbox.users()] == [user.external_user_id]
    home = client.get("/")
    assert user.external_user_id.encode() in home.content


def test_admin_shows_provisioning_state_and_deactivates_upstream(
    client, sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        staff = User.objects.create_superuser(email="staff@example.com", password="pw-staff-123")
        user = UserFactory(email="member@example.com")
    client.force_login(staff)

    changelist = client.get(reverse("admin:accounts_user_changelist"))
    assert changelist.status_code == 200
    assert user.external_user_id.encode() in changelist.content
    assert b"Provisioned" in changelist.content

    change = client.get(reverse("admin:accounts_user_change", args=[user.pk]))
    assert change.status_code == 200
    assert b"Provisioning status" in change.content

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:accounts_user_changelist"),
            {"action": "deactivate_users", "_selected_action": [user.pk]},
        )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.is_active is False
    upstream = {u["externalUserId"]: u["status"] for u in sandbox.users()}
    assert upstream[user.external_user_id] == "inactive"


def test_deactivated_user_loses_their_session(client, django_capture_on_commit_callbacks) -> None:
    from accounts.services import user_set_active

    with django_capture_on_commit_callbacks():
        user = UserFactory()
        client.force_login(user)
        assert client.get("/").context["user"].is_authenticated
        user_set_active(user=user, is_active=False, acting_user=None)
    assert not client.get("/").context["user"].is_authenticated


def test_seed_demo_creates_the_demo_users_and_provisions_them(
    sandbox: SandboxControl, django_capture_on_commit_callbacks, settings
) -> None:
    settings.DEBUG = True  # as `make run` has it
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", stdout=open("/dev/null", "w"))
    users = {u.email: u for u in User.objects.all()}
    assert set(users) == {
        "admin@example.com",
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    }
    assert users["alice@example.com"].external_user_id == "py-user-001"
    assert users["bob@example.com"].external_user_id == "py-user-002"
    assert users["admin@example.com"].is_staff is True
    assert all(u.provisioning_status == ProvisioningStatus.PROVISIONED for u in users.values())
    assert {u["externalUserId"] for u in sandbox.users()} == {
        u.external_user_id for u in users.values()
    }

    # Running it again keeps the users and re-provisions them (the sandbox forgets on restart).
    sandbox.reset()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", stdout=open("/dev/null", "w"))
    assert User.objects.count() == 4
    assert len(sandbox.users()) == 4
    # alice's demo credit is promotional, without expiry, granted once
    alice = users["alice@example.com"]
    lots = list(PromotionalCredit.objects.filter(account_id=alice.pk).values_list(
        "amount_micros", "remaining_micros", "expires_at", "entry__kind"))  # fmt: skip
    assert lots == [(5_000_000, 5_000_000, None, "promotion")]


def test_generation_admin_is_read_only(client, django_capture_on_commit_callbacks) -> None:
    from inference.models import Generation

    with django_capture_on_commit_callbacks():
        staff = User.objects.create_superuser(email="ops@example.com", password="pw-staff-123")
        member = UserFactory()
    generation = Generation.objects.create(
        owner=member, prompt="p", model_id="ByteDance/SDXL-Lightning", width=512, height=512
    )
    client.force_login(staff)

    changelist = client.get(reverse("admin:inference_generation_changelist"))
    assert changelist.status_code == 200
    assert str(generation.pk).encode() in changelist.content
    detail = client.get(reverse("admin:inference_generation_change", args=[generation.pk]))
    assert detail.status_code == 200
    assert b'name="prompt"' not in detail.content  # shown, not editable
    response = client.post(
        reverse("admin:inference_generation_change", args=[generation.pk]), {"prompt": "changed"}
    )
    assert response.status_code == 403
    assert Generation.objects.get(pk=generation.pk).prompt == "p"
    assert client.get(reverse("admin:inference_generation_add")).status_code == 403


def test_seed_demo_refuses_without_debug(sandbox: SandboxControl, settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only runs with DJANGO_DEBUG on"):
        call_command("seed_demo", stdout=io.StringIO())
    assert not User.objects.exists()
    assert sandbox.requests() == []
