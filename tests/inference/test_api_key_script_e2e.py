"""A script with only an API key from the UI: it submits with an Idempotency-Key, its first
request times out on the client's side, it retries the same POST, and the image is made,
held and charged once (real HTTP: curl -> live server -> eager task -> sandbox)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from django.test import Client

from billing.models import Hold
from inference.models import Generation, GenerationStatus
from tests.helpers import wait_for
from tests.inference.paying_user import ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = """
curl -sS --max-time "$MAX_TIME" -o /dev/null -w '%{http_code}' \
  -X POST "$ORIGIN/api/v1/generations" \
  -H "Authorization: Bearer $PIXELHOUSE_API_KEY" \
  -H "Content-Type: application/json" \
  -H "Idempotency-Key: nightly-2026-12-03-0001" \
  -d '{"prompt": "a lighthouse at dusk", "width": 512, "height": 512}'
"""


def _run(origin: str, secret: str, max_time: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "ORIGIN": origin,
            "PIXELHOUSE_API_KEY": secret,
            "MAX_TIME": str(max_time),
        },
    )


def test_a_retried_post_after_a_timeout_is_charged_once(
    live_server: Any, sandbox: SandboxControl
) -> None:
    user = pay_as_you_go_user()
    page = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    page.force_login(user)
    html = page.post("/accounts/api/", {"name": "nightly", "expires_in_days": ""}).content.decode()
    secret = re.search(r"phk_[A-Za-z0-9_-]{43}", html).group(0)
    sandbox.set_config(runnerLatencySeconds=3.0)  # the image takes longer than the client waits

    timed_out = _run(live_server.url, secret, max_time=1)
    assert timed_out.returncode == 28, timed_out  # curl: operation timed out
    retried = _run(live_server.url, secret, max_time=30)
    assert retried.returncode == 0, retried.stderr
    # The retry is answered with the first request's response (or, if it came while the
    # first was still being admitted, told to retry): never a second image.
    assert retried.stdout in {"201", "409"}
    again = _run(live_server.url, secret, max_time=30)
    assert again.stdout == "201"

    generation = Generation.objects.get()

    def finished() -> bool:  # the first request runs the image (eager task) after its answer
        listed = Client().get(
            f"/api/v1/generations/{generation.pk}", HTTP_AUTHORIZATION=f"Bearer {secret}"
        )
        return bool(json.loads(listed.content)["status"] == GenerationStatus.SUCCEEDED)

    wait_for(finished, timeout=30)
    assert Generation.objects.count() == 1
    assert Hold.objects.count() == 1
    kinds = ledger_kinds(user)
    assert kinds.count("hold") == 1
    assert kinds.count("usage_debit") == 1
