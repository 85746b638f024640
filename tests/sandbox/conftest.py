"""Fixtures for the sandbox's own tests: a real sandbox process per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.sandbox_server import SandboxControl, SandboxProcess, free_port


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxProcess]:
    process = SandboxProcess(port=free_port())
    process.start()
    yield process
    process.stop()


@pytest.fixture
def control(sandbox_server: SandboxProcess) -> SandboxControl:
    """The module's sandbox, reset before each test."""
    sandbox_control = SandboxControl(sandbox_server.url)
    sandbox_control.reset()
    return sandbox_control


@pytest.fixture
def base(control: SandboxControl) -> str:
    return control.url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()
