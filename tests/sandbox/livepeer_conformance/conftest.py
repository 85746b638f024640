"""The conformance suite's caller: one end user calling runners as a correct client does."""

from __future__ import annotations

import pytest
import requests

from tests.sandbox.livepeer_conformance.support import Caller


@pytest.fixture
def caller(http: requests.Session, base: str) -> Caller:
    return Caller(http, base)
