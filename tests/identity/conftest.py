from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import clear_cache


@pytest.fixture(autouse=True)
def _fresh_cache(django_db_blocker: Any) -> Iterator[None]:
    """Rate-limit counters, used TOTP codes, JWKS and discovery live in the shared cache
    (Redis outlives a test's transaction): every identity test starts and ends without them."""
    with django_db_blocker.unblock():
        clear_cache()
    yield
    with django_db_blocker.unblock():
        clear_cache()
