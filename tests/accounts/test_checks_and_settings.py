from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks

REPO_ROOT = Path(__file__).resolve().parents[2]


def _ids() -> list[str]:
    from integrations.pymthouse.checks import check_pymthouse_settings

    return [message.id for message in check_pymthouse_settings(None)]


def test_demo_settings_pass_the_pymthouse_checks() -> None:
    assert _ids() == []
    assert [m.id for m in run_checks() if m.id and m.id.startswith("accounts.")] == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PYMTHOUSE_URL", "", ["accounts.E001"]),
        ("PYMTHOUSE_URL", "ftp://pymthouse.com", ["accounts.E002"]),
        ("PYMTHOUSE_URL", "pymthouse.com", ["accounts.E002"]),
        ("PYMTHOUSE_ISSUER", "not a url", ["accounts.E002"]),
        ("PYMTHOUSE_PUBLIC_CLIENT_ID", "m2m_b50c8e3d43c6d3641cae2e66", ["accounts.E004"]),
        ("PYMTHOUSE_PUBLIC_CLIENT_ID", "app_XYZ", ["accounts.E004"]),
        ("PYMTHOUSE_M2M_CLIENT_ID", "app_b50c8e3d43c6d3641cae2e66", ["accounts.E005"]),
        ("PYMTHOUSE_M2M_CLIENT_ID", "m2m_0123456789abcdef01234567", ["accounts.W001"]),
        ("PYMTHOUSE_M2M_CLIENT_SECRET", "", ["accounts.E006"]),
        ("PYMTHOUSE_M2M_CLIENT_SECRET", "sk_live_123", ["accounts.W002"]),
        ("PYMTHOUSE_CONNECT_TIMEOUT", 0, ["accounts.E007"]),
        ("PYMTHOUSE_READ_TIMEOUT", "10", ["accounts.E007"]),
        ("PYMTHOUSE_READ_TIMEOUT", 301, ["accounts.E007"]),
        ("PYMTHOUSE_MAX_RETRIES", -1, ["accounts.E008"]),
        ("OIDC_DISCOVERY_CACHE_SECONDS", 1.5, ["accounts.E008"]),
    ],
)
def test_bad_pymthouse_settings_are_reported_with_stable_ids(
    settings, name: str, value: object, expected: list[str]
) -> None:
    setattr(settings, name, value)
    assert _ids() == expected


def test_plain_http_to_a_remote_host_is_refused_outside_debug(settings) -> None:
    settings.DEBUG = False
    settings.PYMTHOUSE_URL = "http://pymthouse.com"
    assert _ids() == ["accounts.E003"]
    settings.PYMTHOUSE_URL = "http://127.0.0.1:8765"
    assert _ids() == []


def _settings_subprocess(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYMTHOUSE_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


PRINT_BACKENDS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], "
    "s.CELERY_BROKER_URL, s.PYMTHOUSE_URL, s.PYMTHOUSE_ISSUER, s.DEBUG)"
)


def test_no_environment_means_embedded_defaults() -> None:
    result = _settings_subprocess({}, PRINT_BACKENDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "django.core.cache.backends.db.DatabaseCache",
        "filesystem://",
        "http://127.0.0.1:8765",
        "http://127.0.0.1:8765/api/v1/oidc",
        "True",
    ]


def test_database_and_redis_urls_switch_to_postgres_and_redis() -> None:
    result = _settings_subprocess(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/pixelhouse",
            "REDIS_URL": "redis://127.0.0.1:6379/3",
        },
        PRINT_BACKENDS,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == [
        "django.db.backends.postgresql",
        "config.cache.ResilientRedisCache",
        "redis://127.0.0.1:6379/3",
    ]


@pytest.mark.parametrize(
    "missing",
    ["DJANGO_SECRET_KEY", "PYMTHOUSE_M2M_CLIENT_SECRET", "PYMTHOUSE_PUBLIC_CLIENT_ID"],
)
def test_missing_secrets_fail_fast_with_debug_off(missing: str) -> None:
    env = {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "x" * 50,
        "PYMTHOUSE_URL": "https://pymthouse.example",
        "PYMTHOUSE_PUBLIC_CLIENT_ID": "app_b50c8e3d43c6d3641cae2e66",
        "PYMTHOUSE_M2M_CLIENT_ID": "m2m_b50c8e3d43c6d3641cae2e66",
        "PYMTHOUSE_M2M_CLIENT_SECRET": "pmth_cs_" + "a" * 64,
    }
    del env[missing]
    result = _settings_subprocess(env, "import django; django.setup()")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr
    assert "a" * 64 not in result.stderr


def test_debug_off_with_everything_set_starts() -> None:
    result = _settings_subprocess(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "x" * 50,
            "PYMTHOUSE_URL": "https://pymthouse.example",
            "PYMTHOUSE_PUBLIC_CLIENT_ID": "app_b50c8e3d43c6d3641cae2e66",
            "PYMTHOUSE_M2M_CLIENT_ID": "m2m_b50c8e3d43c6d3641cae2e66",
            "PYMTHOUSE_M2M_CLIENT_SECRET": "pmth_cs_" + "a" * 64,
        },
        PRINT_BACKENDS,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[3:] == [
        "https://pymthouse.example",
        "https://pymthouse.example/api/v1/oidc",
        "False",
    ]


def test_sandbox_and_django_share_the_demo_credentials() -> None:
    from django.conf import settings

    from sandbox import config as sandbox_config

    config = sandbox_config.SandboxSettings()
    assert (config.app_id, config.m2m_client_id, config.m2m_client_secret) == (
        settings.SANDBOX_DEMO_PUBLIC_CLIENT_ID,
        settings.SANDBOX_DEMO_M2M_CLIENT_ID,
        settings.SANDBOX_DEMO_M2M_CLIENT_SECRET,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PYMTHOUSE_URL", "pymthouse.example", "PYMTHOUSE_URL must be an absolute http(s) URL"),
        ("PYMTHOUSE_READ_TIMEOUT", "-1", "PYMTHOUSE_CONNECT/READ_TIMEOUT must be positive"),
        ("LIVEPEER_MAX_PRICE_MARKUP", "0.5", "LIVEPEER_MAX_PRICE_MARKUP must be a decimal >= 1"),
        ("LIVEPEER_QUEUE_TIMEOUT", "0", "LIVEPEER_QUEUE_TIMEOUT must be positive"),
        ("BILLING_MODE", "merchnt", "BILLING_MODE must be one of owner_rollup, merchant"),
        ("BILLING_TOPUP_PRESETS_USD", "10,0.5", "BILLING_TOPUP_PRESETS_USD must be whole dollars"),
        ("BILLING_TOPUP_CONFIRM_SECONDS", "0", "BILLING_TOPUP_CONFIRM_SECONDS >= 1"),
    ],
)
def test_invalid_client_settings_fail_at_settings_import(
    name: str, value: str, message: str
) -> None:
    result = _settings_subprocess({name: value}, "import django; django.setup()")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
