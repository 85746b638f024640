from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import UserFactory


@pytest.fixture
def user(django_capture_on_commit_callbacks):
    """A signed-up user (no provisioning call: its on-commit task is captured, not run)."""
    with django_capture_on_commit_callbacks():
        return UserFactory()


@pytest.fixture
def api(user) -> Client:
    """A browser session signed in as ``user`` (session auth)."""
    client = Client()
    client.force_login(user)
    return client
