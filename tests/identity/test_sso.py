from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY

from accounts.models import User
from tests.identity import sso

pytestmark = pytest.mark.django_db

ADA = "ada@sandbox.pymthouse.test"


def test_sso_login_creates_a_provisioned_user(client, sandbox) -> None:
    authorization = sso.authorize(client, email=ADA)
    response = sso.finish(client, authorization)
    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(email=ADA)
    assert client.session[SESSION_KEY] == str(user.pk)
