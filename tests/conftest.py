from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command

from integrations.oidc import local_copies_clear
from tests.sandbox_server import SandboxControl, SandboxProcess
from tests.stripe_server import StripeProcess
from tests.web_server import WebServerProcess, running_web_server
from tests.worker import WorkerProcess, running_worker


@pytest.fixture(scope="session", autouse=True)
def _test_run_directory() -> Iterator[None]:
    """This run's private var directory; removed at the end unless KEEP_TEST_VAR is set."""
    path = Path(settings.TEST_VAR_DIR)
    path.mkdir(parents=True, exist_ok=True)
    yield
    if not os.environ.get("KEEP_TEST_VAR"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    # The database cache table is not a model, so migrations do not create it.
    with django_db_blocker.unblock():
        call_command("createcachetable", verbosity=0)
    yield
    # Worker and live-server connections may outlive their processes' shutdown by a
    # moment; end them so the test database can be dropped.
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


def clear_cache() -> None:
    """Empty the shared cache without touching anything else in Redis (the broker),
    and this process's own copies of the OIDC documents."""
    local_copies_clear()
    if settings.REDIS_URL:
        client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        prefix = settings.CACHES["default"]["KEY_PREFIX"]
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    else:
        cache.clear()


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    process = SandboxProcess(
        port=int(os.environ["TEST_SANDBOX_PORT"]),
        env={
            "PYMTHOUSE_PUBLIC_CLIENT_ID": settings.PYMTHOUSE_PUBLIC_CLIENT_ID,
            "PYMTHOUSE_M2M_CLIENT_ID": settings.PYMTHOUSE_M2M_CLIENT_ID,
            "PYMTHOUSE_M2M_CLIENT_SECRET": settings.PYMTHOUSE_M2M_CLIENT_SECRET,
        },
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def stripe_process() -> Iterator[StripeProcess]:
    """localstripe on this session's ``TEST_STRIPE_PORT`` (sandbox/stripe.py)."""
    process = StripeProcess(port=int(os.environ["TEST_STRIPE_PORT"]))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def stripe_sandbox(stripe_process: StripeProcess) -> StripeProcess:
    """localstripe with no webhook endpoint: tests post signed events themselves, or
    register the live server's URL (``stripe_process.webhook_register``)."""
    stripe_process.webhook_unregister()
    return stripe_process


@pytest.fixture
def sandbox(
    sandbox_process: SandboxProcess, request: pytest.FixtureRequest, django_db_blocker: Any
) -> SandboxControl:
    """The running sandbox, reset, with the shared cache emptied (for database tests)."""
    control = SandboxControl(sandbox_process.url)
    control.reset()
    uses_db = request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in ("db", "transactional_db")
    )
    if uses_db or settings.REDIS_URL:
        with django_db_blocker.unblock():
            clear_cache()
    return control


@pytest.fixture
def worker_process(transactional_db: Any, sandbox: SandboxControl) -> Iterator[WorkerProcess]:
    """A real Celery worker process on the test database, for this test only."""
    with running_worker() as worker:
        yield worker


@pytest.fixture
def web_server(transactional_db: Any, sandbox: SandboxControl) -> Iterator[WebServerProcess]:
    """The production web process (Django under ASGI, uvicorn) on the test database."""
    with running_web_server() as server:
        yield server
