"""``CELERY_BROKER_POLLING_INTERVAL``: the embedded broker's polling interval (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "import json, django; django.setup()\n"
    "from django.conf import settings\n"
    "print(json.dumps(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('polling_interval')))\n"
)


def _settings_process(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_"))
    }
    env.update(
        {"DJANGO_SETTINGS_MODULE": "config.settings", "PIXELHOUSE_VAR_DIR": str(tmp_path)},
        **variables,
    )
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_interval_defaults_to_a_twentieth_of_a_second_and_is_settable(tmp_path: Path) -> None:
    default = _settings_process(tmp_path)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout.splitlines()[-1]) == 0.05

    faster = _settings_process(tmp_path, CELERY_BROKER_POLLING_INTERVAL="0.02")
    assert faster.returncode == 0, faster.stderr
    assert json.loads(faster.stdout.splitlines()[-1]) == 0.02


def test_a_zero_interval_is_refused_and_redis_ignores_it(tmp_path: Path) -> None:
    refused = _settings_process(tmp_path, CELERY_BROKER_POLLING_INTERVAL="0")
    assert refused.returncode != 0
    assert "CELERY_BROKER_POLLING_INTERVAL must be positive." in refused.stderr

    redis = _settings_process(
        tmp_path,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_POLLING_INTERVAL="0.02",
    )
    assert redis.returncode == 0, redis.stderr
    assert json.loads(redis.stdout.splitlines()[-1]) is None  # Redis blocks; it never polls
