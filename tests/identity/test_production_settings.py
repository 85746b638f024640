"""Production settings: check --deploy clean, HSTS, Secure/HttpOnly/SameSite cookies, CSRF."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "prod-test-" + "k" * 50,
    "DJANGO_ALLOWED_HOSTS": "app.example",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://app.example,https://www.app.example",
    "PYMTHOUSE_URL": "https://pymthouse.example",
    "PYMTHOUSE_PUBLIC_CLIENT_ID": "app_b50c8e3d43c6d3641cae2e66",
    "PYMTHOUSE_M2M_CLIENT_ID": "m2m_b50c8e3d43c6d3641cae2e66",
    "PYMTHOUSE_M2M_CLIENT_SECRET": "pmth_cs_" + "a" * 64,
    "SSO_PYMTHOUSE_CLIENT_ID": "web_b50c8e3d43c6d3641cae2e66",
    "SSO_PYMTHOUSE_CLIENT_SECRET": "web-secret-" + "b" * 40,
    "ACCOUNT_EMAIL_VERIFICATION": "none",  # ignored with DEBUG off
}


def _run(env: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYMTHOUSE_", "SSO_", "OIDC_", "ACCOUNT_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings"
    clean["PIXELHOUSE_VAR_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path) -> None:
    result = _run(
        PRODUCTION, "manage.py", "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "b" * 40 not in result.stdout + result.stderr


def test_check_deploy_fails_on_a_plain_http_issuer_or_console_mail(tmp_path) -> None:
    env = {
        **PRODUCTION,
        "SSO_EXTRA_PROVIDERS": json.dumps(
            [{"provider_id": "corp", "client_id": "c", "server_url": "http://idp.example"}]
        ),
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
    }
    result = _run(
        env, "manage.py", "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "accounts.E010" in result.stderr
    assert "accounts.W010" in result.stderr


SNIPPET = """
import django, json
django.setup()
from django.conf import settings as s
from django.test import Client
r = Client().get("/healthz", secure=True, HTTP_HOST="app.example")
insecure = Client().get("/healthz", HTTP_HOST="app.example")
print(json.dumps({
  "hsts": r.headers.get("Strict-Transport-Security"),
  "redirect": [insecure.status_code, insecure.headers.get("Location")],
  "cookies": [s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE,
              s.CSRF_COOKIE_SECURE, s.CSRF_COOKIE_SAMESITE],
  "csrf_origins": s.CSRF_TRUSTED_ORIGINS,
  "verification": s.ACCOUNT_EMAIL_VERIFICATION,
  "mail": s.EMAIL_BACKEND,
  "sso": [a["client_id"] for a in s.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]],
}))
"""


def test_production_responses_and_cookies(tmp_path) -> None:
    result = _run(PRODUCTION, "-c", SNIPPET, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert facts["redirect"] == [301, "https://app.example/healthz"]
    assert facts["cookies"] == [True, True, "Lax", True, "Lax"]
    assert facts["csrf_origins"] == ["https://app.example", "https://www.app.example"]
    assert facts["verification"] == "mandatory"
    assert facts["mail"] == "django.core.mail.backends.smtp.EmailBackend"
    assert facts["sso"] == ["web_b50c8e3d43c6d3641cae2e66"]


def test_sso_secret_is_required_when_a_client_is_configured(tmp_path) -> None:
    env = dict(PRODUCTION)
    del env["SSO_PYMTHOUSE_CLIENT_SECRET"]
    result = _run(env, "-c", "import django; django.setup()", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SSO_PYMTHOUSE_CLIENT_SECRET must be set" in result.stderr
