from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import clear_cache


@pytest.fixture(autouse=True)
def _fresh_cache(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """Rate-limit counters, used TOTP codes, JWKS and discovery live in the shared cache
    (Redis outlives a test's transaction): every database test here starts and ends
    without them."""
    if request.node.get_closest_marker("django_db") is None:
        yield
        return
    request.getfixturevalue("django_db_setup")
    with django_db_blocker.unblock():
        clear_cache()
    yield
    with django_db_blocker.unblock():
        clear_cache()
