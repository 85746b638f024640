"""Fixtures for the pymthouse client tests: a fresh client against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from integrations.pymthouse import PymthouseClient
from tests.sandbox_server import SandboxControl


@pytest.fixture
def client(sandbox: SandboxControl) -> Iterator[PymthouseClient]:
    """A client built from the (possibly overridden) settings; closed afterwards.

    Tests that override settings build their own with ``PymthouseClient.from_settings()``.
    """
    pymthouse = PymthouseClient.from_settings()
    yield pymthouse
    pymthouse.close()


def app_path(suffix: str = "") -> str:
    return f"/api/v1/apps/{settings.PYMTHOUSE_PUBLIC_CLIENT_ID}{suffix}"


def builder_path(suffix: str = "") -> str:
    return f"/api/v1/builder/apps/{settings.PYMTHOUSE_PUBLIC_CLIENT_ID}{suffix}"


ISSUER_DOC = "/api/v1/oidc/.well-known/openid-configuration"
ROOT_DOC = "/.well-known/openid-configuration"
TOKEN_PATH = "/api/v1/oidc/token"


def calls(sandbox: SandboxControl, method: str, path: str) -> list[dict[str, Any]]:
    """Requests the sandbox saw with exactly this method and path (query ignored)."""
    return [
        record
        for record in sandbox.requests(path)
        if record["method"] == method and record["path"] == path
    ]
