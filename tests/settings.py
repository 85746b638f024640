"""Test settings: config.settings plus test-only concerns.

The sandbox runs on a free loopback port chosen once per test session and
exported as TEST_SANDBOX_PORT so worker subprocesses (which import these
settings too) point at the same sandbox.
"""

from __future__ import annotations

import os

from config.settings import *  # noqa: F403
from config.settings import (
    BASE_DIR,
    CACHES,
    CELERY_BROKER_URL,
    DATABASES,
    LIVEPEER_MAX_PRICE_MARKUP,
    REDIS_URL,
    SANDBOX_DEMO_M2M_CLIENT_ID,
    SANDBOX_DEMO_M2M_CLIENT_SECRET,
    SANDBOX_DEMO_PUBLIC_CLIENT_ID,
    VAR_DIR,
    env,
    filesystem_broker_options,
    sso_providers,
)
from tests.sandbox_server import free_port

TEST_SANDBOX_PORT = os.environ.get("TEST_SANDBOX_PORT") or str(free_port())
os.environ["TEST_SANDBOX_PORT"] = TEST_SANDBOX_PORT
# localstripe (sandbox/stripe.py), started once per session by tests/conftest.py.
TEST_STRIPE_PORT = os.environ.get("TEST_STRIPE_PORT") or str(free_port())
os.environ["TEST_STRIPE_PORT"] = TEST_STRIPE_PORT
STRIPE_SECRET_KEY = "sk_test_pixelhouse_tests_0123456789"
STRIPE_PUBLISHABLE_KEY = "pk_test_pixelhouse_tests"
STRIPE_WEBHOOK_SECRET = "whsec_pixelhouse_tests"
STRIPE_API_BASE = f"http://127.0.0.1:{TEST_STRIPE_PORT}"
STRIPE_JS_URL = f"{STRIPE_API_BASE}/js.stripe.com/v3/"
STRIPE_TIMEOUT_SECONDS = 10.0

# One directory (SQLite file, broker folder, media) and one queue per test
# run, so concurrent runs on one machine never share state. Subprocesses
# inherit TEST_RUN_ID and land in the same place.
TEST_RUN_ID = os.environ.setdefault("TEST_RUN_ID", f"{os.getpid()}")
TEST_VAR_DIR = VAR_DIR / "test" / TEST_RUN_ID
CELERY_TASK_DEFAULT_QUEUE = f"test-{TEST_RUN_ID}"

PYMTHOUSE_URL = f"http://127.0.0.1:{TEST_SANDBOX_PORT}"
PYMTHOUSE_ISSUER = f"{PYMTHOUSE_URL}/api/v1/oidc"
SOCIALACCOUNT_PROVIDERS = sso_providers(PYMTHOUSE_ISSUER)
OIDC_API_ISSUER = OIDC_API_AUDIENCE = PYMTHOUSE_ISSUER
OIDC_OP_TOKEN_ENDPOINT = f"{PYMTHOUSE_ISSUER}/token"
OIDC_OP_USER_ENDPOINT = f"{PYMTHOUSE_ISSUER}/me"
OIDC_OP_JWKS_ENDPOINT = f"{PYMTHOUSE_ISSUER}/jwks"
LIVEPEER_GATEWAY_URL = PYMTHOUSE_URL  # the sandbox also serves the AI gateway batch API
# The sandbox is on loopback; a test (or worker env) turns this off to get production's refusal.
LIVEPEER_ALLOW_PRIVATE_ADDRESSES = env.bool("TEST_LIVEPEER_ALLOW_PRIVATE_ADDRESSES", default=True)
# Tests change the sandbox's runners and prices between generations; the tests of the
# discovery cache turn it on (tests/integrations/livepeer/test_connections.py).
LIVEPEER_DISCOVERY_CACHE_SECONDS = 0.0
# config/settings.py refuses an invalid markup at import; applied here, after that check,
# it gives a worker a configuration error it only meets mid-run (tests/inference e2e).
LIVEPEER_MAX_PRICE_MARKUP = env.str(
    "TEST_LIVEPEER_MAX_PRICE_MARKUP", default=LIVEPEER_MAX_PRICE_MARKUP
)
PYMTHOUSE_PUBLIC_CLIENT_ID = SANDBOX_DEMO_PUBLIC_CLIENT_ID
PYMTHOUSE_M2M_CLIENT_ID = SANDBOX_DEMO_M2M_CLIENT_ID
PYMTHOUSE_M2M_CLIENT_SECRET = SANDBOX_DEMO_M2M_CLIENT_SECRET
PYMTHOUSE_CONNECT_TIMEOUT = 2.0
PYMTHOUSE_READ_TIMEOUT = 5.0
PYMTHOUSE_MAX_RETRIES = 2

if os.environ.get("TEST_DATABASE_NAME"):
    # A worker subprocess started by the tests: use the test database itself.
    DATABASES["default"]["NAME"] = os.environ["TEST_DATABASE_NAME"]
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so subprocesses (workers, cache-sharing tests)
    # can open the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_pixelhouse_{TEST_RUN_ID}"}

if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"pixelhouse-test-{TEST_RUN_ID}"
else:
    CACHES["default"]["LOCATION"] = "pixelhouse_cache"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = TEST_VAR_DIR / "media"
STATIC_ROOT = TEST_VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Tasks run inline unless a test starts a real worker (those set this to false
# in the worker's environment).
TASK_RETRY_BACKOFF_SECONDS = 0.2
TASK_RETRY_BACKOFF_MAX_SECONDS = 1.0
CELERY_TASK_ALWAYS_EAGER = env.bool("TEST_CELERY_EAGER", default=True)
if CELERY_BROKER_URL == "filesystem://":
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(TEST_VAR_DIR)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}

STATICFILES_DIRS = [BASE_DIR / "static"]
