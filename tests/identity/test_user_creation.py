"""Every way a user is created goes through accounts.services (issue 7's import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command

from accounts.models import ProvisioningStatus, User

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_models_do_not_import_the_service_layer() -> None:
    """No import of accounts.services anywhere in accounts/models.py (nor a lazy one)."""
    tree = ast.parse((REPO_ROOT / "accounts" / "models.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "accounts.models" not in imported
    assert not {name for name in imported if name.startswith("accounts.")} - {"accounts.validators"}


@pytest.mark.django_db
def test_createsuperuser_schedules_provisioning_and_verifies_the_address(
    sandbox, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "pw-root-98765")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("createsuperuser", interactive=False, email="root@example.com", verbosity=0)
    user = User.objects.get(email="root@example.com")
    assert user.is_superuser
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED
    assert [u["externalUserId"] for u in sandbox.users()] == [user.external_user_id]
    assert EmailAddress.objects.get(user=user).verified is True


@pytest.mark.django_db
def test_admin_add_form_goes_through_the_service(
    client, sandbox, django_capture_on_commit_callbacks
) -> None:
    from accounts.services import user_create

    client.force_login(user_create(email="ops@example.com", is_staff=True, is_superuser=True))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/accounts/user/add/",
            {
                "email": "added@example.com",
                "password1": "pw-added-4444x",
                "password2": "pw-added-4444x",
            },
        )
    assert response.status_code == 302
    user = User.objects.get(email="added@example.com")
    assert user.provisioning_status == ProvisioningStatus.PROVISIONED
    assert user.external_user_id in {u["externalUserId"] for u in sandbox.users()}
