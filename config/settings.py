"""Settings for pixelhouse: one env-driven module.

With no environment at all the product runs on embedded defaults: SQLite, a
filesystem Celery broker, a database cache shared by web and worker processes,
and the local sandbox (``python -m sandbox``) standing in for pymthouse.

With ``DATABASE_URL`` (Postgres) and ``REDIS_URL`` it runs on Postgres and
Redis (Celery broker and Django cache). With ``DJANGO_DEBUG=false`` every
secret must come from the environment; a missing one stops the process at
start-up with a message naming it.

Every setting is listed in README.md ("Settings").
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets Django's generic classes be subscripted at runtime (QuerySet[User] …).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PIXELHOUSE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

DEBUG: bool = env.bool("DJANGO_DEBUG", default=True)

# Demo credentials of the local sandbox (sandbox/config.py seeds the same app).
# They are only used when DEBUG is on; production must set real values.
SANDBOX_DEMO_PUBLIC_CLIENT_ID = "app_b50c8e3d43c6d3641cae2e66"
SANDBOX_DEMO_M2M_CLIENT_ID = "m2m_b50c8e3d43c6d3641cae2e66"
SANDBOX_DEMO_M2M_CLIENT_SECRET = (
    "pmth_cs_d219242171aaac09ef84f4b5af2f26e2abf754b68d78b9462ca567a2e8a0cbfe"  # noqa: S105  (published sandbox credential)
)


def _secret(name: str, debug_default: str) -> str:
    """A secret: defaulted only while DEBUG is on, otherwise required."""
    value: str = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return debug_default
    raise ImproperlyConfigured(
        f"{name} must be set when DJANGO_DEBUG is off (see README.md, 'Settings')."
    )


SECRET_KEY = _secret("DJANGO_SECRET_KEY", "django-insecure-local-development-only")
ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # First, so its management commands (createsuperuser) override Django's.
    "accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "allauth.usersessions",
    "ninja",
    "django_celery_beat",
    "billing",
    "inference",
    "usage",  # the top floor: imports inference, billing, accounts, integrations
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "config.middleware.UserSessionsMiddleware",  # allauth's, minus the polled reads
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Persistent connections, per thread, in the worker, beat and management commands (SQLite
# and Postgres alike). The web process runs under ASGI (config/asgi.py sets
# PIXELHOUSE_ASGI): Django gives every ASGI request a thread of its own, so a connection
# kept past the request would never be reused (it would leak until collected); there
# every request closes its connection, as Django's documentation asks.
ASGI_SERVER: bool = env.bool("PIXELHOUSE_ASGI", default=False)
DATABASES["default"]["CONN_MAX_AGE"] = (
    0 if ASGI_SERVER else env.int("DATABASE_CONN_MAX_AGE", default=60)
)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL under ASGI: a pool per web process (Django's, psycopg_pool) lends each
# request a connection and takes it back at the request's end, so a request does not
# pay a new server backend (connect, auth, fork) as it would with CONN_MAX_AGE 0; the
# pool checks a connection before lending it (CONN_HEALTH_CHECKS). Off with
# DATABASE_POOL=false.
DATABASE_POOL: bool = env.bool("DATABASE_POOL", default=True)
DATABASE_POOL_MAX_SIZE: int = env.int("DATABASE_POOL_MAX_SIZE", default=8)
if (
    ASGI_SERVER
    and DATABASE_POOL
    and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": 10,  # a request waits this long for a free connection, then fails
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share this file: wait for locks instead of failing,
    # and take the write lock up front so transactions never deadlock-upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (shared by web and worker processes) -----------------------------
REDIS_URL: str = env.str("REDIS_URL", default="")
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            # Degrades to misses while Redis is down (config/cache.py).
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "pixelhouse",
            # An unreachable Redis is noticed within a second, then treated as misses.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "pixelhouse_cache",
        }
    }

# --- Auth -------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# django-allauth: https://docs.allauth.org/en/latest/account/configuration.html
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
# Mandatory outside DEBUG (a person proves the address before signing in).
ACCOUNT_EMAIL_VERIFICATION: str = (
    env.str("ACCOUNT_EMAIL_VERIFICATION", default="optional") if DEBUG else "mandatory"
)
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = False
ACCOUNT_CHANGE_EMAIL = True  # one address; changing it needs the new one verified
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_PREVENT_ENUMERATION = True
# allauth's rate limits (its defaults, spelled out so they are visibly on).
ACCOUNT_RATE_LIMITS: dict[str, str] | bool = {
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reset_password": "20/m/ip,5/m/key",
    "reauthenticate": "10/m/user",
    "reset_password_from_key": "20/m/ip",
    "signup": "20/m/ip",
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "confirm_email": "1/3m/key",
}
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
SOCIALACCOUNT_REQUESTS_TIMEOUT = env.int("SOCIALACCOUNT_REQUESTS_TIMEOUT", default=10)
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # never log into an account by e-mail alone
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_LOGIN_ON_GET = False  # starting SSO is a POST (no login CSRF via <img src>)
SOCIALACCOUNT_STORE_TOKENS = False  # provider tokens are never persisted
SOCIALACCOUNT_AUTO_SIGNUP = True
# An address the IdP marks verified (email_verified) needs no mail; any other is
# verified like a sign-up's.
SOCIALACCOUNT_EMAIL_VERIFICATION = ACCOUNT_EMAIL_VERIFICATION

MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "pixelhouse"
USERSESSIONS_TRACK_ACTIVITY = True
# A session's activity row is written at most this often from the same IP and user agent
# (config/middleware.py); 0 writes it on every request, as allauth does.
USERSESSIONS_ACTIVITY_INTERVAL_SECONDS: int = env.int(
    "USERSESSIONS_ACTIVITY_INTERVAL_SECONDS", default=60
)

# --- Single sign-on (OIDC) ----------------------------------------------------
# Every provider is allauth's openid_connect provider with the checks of
# accounts/sso (PKCE S256, nonce, strict ID token). pymthouse's issuer comes
# from PYMTHOUSE_ISSUER with its confidential web_ client; more providers from
# SSO_EXTRA_PROVIDERS (JSON list of {provider_id, name, client_id, secret,
# server_url}); more still from the admin (Social applications).
SANDBOX_DEMO_WEB_CLIENT_ID = "web_b50c8e3d43c6d3641cae2e66"
SANDBOX_DEMO_WEB_CLIENT_SECRET = (
    "pmth_cs_5f0c1b7e2a9d4c6b8e3f1a0d7c5b9e2f4a6c8d0b1e3f5a7c9d2b4f6e8a0c1d3e"  # noqa: S105  (published sandbox credential)
)
SSO_PYMTHOUSE_CLIENT_ID: str = env.str(
    "SSO_PYMTHOUSE_CLIENT_ID", default=SANDBOX_DEMO_WEB_CLIENT_ID if DEBUG else ""
)
SSO_PYMTHOUSE_CLIENT_SECRET: str = (
    _secret("SSO_PYMTHOUSE_CLIENT_SECRET", SANDBOX_DEMO_WEB_CLIENT_SECRET)
    if SSO_PYMTHOUSE_CLIENT_ID
    else ""
)
SSO_PYMTHOUSE_NAME: str = env.str(
    "SSO_PYMTHOUSE_NAME", default="pymthouse (sandbox)" if DEBUG else "pymthouse"
)
SSO_EXTRA_PROVIDERS: list[dict[str, Any]] = env.json("SSO_EXTRA_PROVIDERS", default=[])
OIDC_LEEWAY_SECONDS: int = env.int("OIDC_LEEWAY_SECONDS", default=60)
# Lifetime of every OIDC discovery document and JWKS in the cache (SSO, API bearer
# tokens and the pymthouse client's token endpoint); an unknown `kid` refetches.
OIDC_DISCOVERY_CACHE_SECONDS: int = env.int("OIDC_DISCOVERY_CACHE_SECONDS", default=300)
# Seconds a process answers an OIDC document from its own memory before asking the
# shared cache again (no cache read per token mint); capped at the value above.
OIDC_DISCOVERY_LOCAL_SECONDS: int = env.int("OIDC_DISCOVERY_LOCAL_SECONDS", default=30)
EMAIL_BACKEND = env.str(
    "DJANGO_EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = env.str("DJANGO_EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("DJANGO_EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("DJANGO_EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("DJANGO_EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("DJANGO_EMAIL_USE_TLS", default=True)
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="pixelhouse <noreply@localhost>")

# --- I18N / static / media --------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security (effective when DEBUG is off) ---------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Celery -----------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
# Redis redelivers an unacknowledged message after this many seconds; it must
# exceed the longest task hard time limit (tests assert the order).
BROKER_VISIBILITY_TIMEOUT_SECONDS = 3600
# The embedded filesystem broker has no blocking read: an idle worker looks at the queue
# folder this often (seconds), so a message waits up to one interval before a worker
# sees it. Shorter is quicker hand-off for more idle CPU (docs/benchmarks.md measures it);
# Redis has no such wait.
CELERY_BROKER_POLLING_INTERVAL: float = env.float("CELERY_BROKER_POLLING_INTERVAL", default=0.05)
if CELERY_BROKER_POLLING_INTERVAL <= 0:
    raise ImproperlyConfigured("CELERY_BROKER_POLLING_INTERVAL must be positive.")


def filesystem_broker_options(
    var_dir: Path, polling_interval: float = CELERY_BROKER_POLLING_INTERVAL
) -> dict[str, Any]:
    """Folders and polling of the embedded broker under ``var_dir`` (created here)."""
    queue_dir = var_dir / "celery" / "queue"
    queue_dir.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(var_dir / "celery" / "control"),
        "polling_interval": polling_interval,
    }


CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any]
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport with atomic publish and claim (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:AtomicFilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(VAR_DIR)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BROKER_VISIBILITY_TIMEOUT_SECONDS}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_ACKS_LATE = False  # opted into per task, only where the task is idempotent
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fix-up closes every database connection around every task unless this
# is set; config/celery.py then recycles them as Django does per request (CONN_MAX_AGE,
# CONN_HEALTH_CHECKS). The fix-up still closes them all after this many tasks per process.
CELERY_DB_REUSE_MAX = 1000
# Task retries: exponential backoff base and cap (seconds), jittered.
TASK_RETRY_BACKOFF_SECONDS: float = env.float("TASK_RETRY_BACKOFF_SECONDS", default=5.0)
TASK_RETRY_BACKOFF_MAX_SECONDS: float = env.float("TASK_RETRY_BACKOFF_MAX_SECONDS", default=300.0)
# Beat reads its schedule from the database (django-celery-beat, editable in the admin).
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The periodic jobs themselves: PERIODIC_JOBS (end of this file).

# --- pymthouse --------------------------------------------------------------
# Contract: docs/upstream.md (pymthouse). Credentials are NOT Livepeer
# Studio API keys: they are a pymthouse Builder app's public id (app_…) and
# its machine-to-machine sibling (m2m_… + pmth_cs_… secret).
PYMTHOUSE_URL: str = env.str("PYMTHOUSE_URL", default="http://127.0.0.1:8765").rstrip("/")
PYMTHOUSE_ISSUER: str = env.str("PYMTHOUSE_ISSUER", default=f"{PYMTHOUSE_URL}/api/v1/oidc").rstrip(
    "/"
)
PYMTHOUSE_PUBLIC_CLIENT_ID: str = env.str(
    "PYMTHOUSE_PUBLIC_CLIENT_ID", default=SANDBOX_DEMO_PUBLIC_CLIENT_ID if DEBUG else ""
)
PYMTHOUSE_M2M_CLIENT_ID: str = env.str(
    "PYMTHOUSE_M2M_CLIENT_ID", default=SANDBOX_DEMO_M2M_CLIENT_ID if DEBUG else ""
)
PYMTHOUSE_M2M_CLIENT_SECRET: str = _secret(
    "PYMTHOUSE_M2M_CLIENT_SECRET", SANDBOX_DEMO_M2M_CLIENT_SECRET
)
if not DEBUG and not (PYMTHOUSE_PUBLIC_CLIENT_ID and PYMTHOUSE_M2M_CLIENT_ID):
    raise ImproperlyConfigured(
        "PYMTHOUSE_PUBLIC_CLIENT_ID and PYMTHOUSE_M2M_CLIENT_ID must be set when "
        "DJANGO_DEBUG is off (see README.md, 'Settings')."
    )
PYMTHOUSE_CONNECT_TIMEOUT: float = env.float("PYMTHOUSE_CONNECT_TIMEOUT", default=3.05)
PYMTHOUSE_READ_TIMEOUT: float = env.float("PYMTHOUSE_READ_TIMEOUT", default=15.0)
PYMTHOUSE_MAX_RETRIES: int = env.int("PYMTHOUSE_MAX_RETRIES", default=2)


def sso_providers(issuer: str) -> dict[str, Any]:
    """allauth's SOCIALACCOUNT_PROVIDERS: pymthouse (if configured) plus SSO_EXTRA_PROVIDERS."""
    apps: list[dict[str, Any]] = []
    if SSO_PYMTHOUSE_CLIENT_ID:
        apps.append(
            {
                "provider_id": "pymthouse",
                "name": SSO_PYMTHOUSE_NAME,
                "client_id": SSO_PYMTHOUSE_CLIENT_ID,
                "secret": SSO_PYMTHOUSE_CLIENT_SECRET,
                "settings": {
                    "server_url": issuer,
                    # Observed against pymthouse (docs/identity.md, "Upstream facts").
                    "token_auth_method": "client_secret_basic",
                    "fetch_userinfo": False,
                    "scope": ["openid", "email", "profile"],
                },
            }
        )
    for extra in SSO_EXTRA_PROVIDERS:
        settings_block = {
            "server_url": extra["server_url"],
            "fetch_userinfo": extra.get("fetch_userinfo", False),
        }
        if "token_auth_method" in extra:
            settings_block["token_auth_method"] = extra["token_auth_method"]
        apps.append(
            {
                "provider_id": extra["provider_id"],
                "name": extra.get("name", extra["provider_id"]),
                "client_id": extra["client_id"],
                "secret": extra.get("secret", ""),
                "settings": settings_block,
            }
        )
    return {
        "openid_connect": {
            "provider_class": "accounts.sso.provider.HardenedOpenIDConnectProvider",
            "OAUTH_PKCE_ENABLED": True,
            "APPS": apps,
        }
    }


SOCIALACCOUNT_PROVIDERS: dict[str, Any] = sso_providers(PYMTHOUSE_ISSUER)

# --- API bearer tokens (mozilla-django-oidc, accounts/api_auth.py) -----------
# Access tokens from the issuer below authenticate JSON API calls. pymthouse's
# access tokens carry aud = the issuer (docs/identity.md, "Upstream facts").
OIDC_API_ISSUER: str = env.str("OIDC_API_ISSUER", default=PYMTHOUSE_ISSUER).rstrip("/")
OIDC_API_AUDIENCE: str = env.str("OIDC_API_AUDIENCE", default=OIDC_API_ISSUER)
OIDC_API_CREATE_USERS: bool = env.bool("OIDC_API_CREATE_USERS", default=False)
# The OAuth clients whose access tokens the API accepts (the token's `client_id` claim,
# as pymthouse issues it): our own SSO web client and this list. A token pymthouse
# issued to another Builder app the user also signs in to is refused.
OIDC_API_TRUSTED_CLIENT_IDS: frozenset[str] = frozenset(
    client_id
    for client_id in (SSO_PYMTHOUSE_CLIENT_ID, *env.list("OIDC_API_TRUSTED_CLIENT_IDS", default=[]))
    if client_id
)
OIDC_RP_CLIENT_ID: str = SSO_PYMTHOUSE_CLIENT_ID
OIDC_RP_CLIENT_SECRET: str = SSO_PYMTHOUSE_CLIENT_SECRET
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_OP_TOKEN_ENDPOINT = f"{OIDC_API_ISSUER}/token"
OIDC_OP_USER_ENDPOINT = f"{OIDC_API_ISSUER}/me"
OIDC_OP_JWKS_ENDPOINT = f"{OIDC_API_ISSUER}/jwks"
OIDC_USE_NONCE = False  # bearer access tokens carry no nonce
OIDC_TIMEOUT = (3.05, 10)

# --- Personal API keys (accounts/services.py) --------------------------------
# ``Authorization: Bearer phk_…``: requests per key per fixed window (429 + Retry-After
# beyond), counted in the cache shared by every web process.
API_KEY_RATE_LIMIT_COUNT: int = env.int("API_KEY_RATE_LIMIT_COUNT", default=120)
API_KEY_RATE_LIMIT_WINDOW_SECONDS: int = env.int("API_KEY_RATE_LIMIT_WINDOW_SECONDS", default=60)
if API_KEY_RATE_LIMIT_COUNT < 1 or API_KEY_RATE_LIMIT_WINDOW_SECONDS < 1:
    raise ImproperlyConfigured(
        "API_KEY_RATE_LIMIT_COUNT and API_KEY_RATE_LIMIT_WINDOW_SECONDS must be positive."
    )

# --- Image generation (Livepeer) -------------------------------------------
# "live-runner": pay Livepeer runners with tickets from pymthouse's remote
# signer (docs/upstream.md, "Paying a live runner"); each call is charged to the end user.
# "ai-gateway": a go-livepeer AI gateway's batch API; the gateway pays with its
# own key, so pymthouse charges nobody per user (see LIVEPEER_GATEWAY_HONOURS_USER_TOKENS).
INFERENCE_BACKEND: str = env.str("INFERENCE_BACKEND", default="live-runner")
# Empty: the AI gateway is PYMTHOUSE_URL (integrations/livepeer/config.py).
LIVEPEER_GATEWAY_URL: str = env.str("LIVEPEER_GATEWAY_URL", default="").rstrip("/")
LIVEPEER_CONNECT_TIMEOUT: float = env.float("LIVEPEER_CONNECT_TIMEOUT", default=3.05)
LIVEPEER_READ_TIMEOUT: float = env.float("LIVEPEER_READ_TIMEOUT", default=120.0)
LIVEPEER_SIGNER_READ_TIMEOUT: float = env.float("LIVEPEER_SIGNER_READ_TIMEOUT", default=15.0)
# Seconds a signer's discovery answer (orchestrators, runners, prices) is reused per
# discovery URL in one process; runner prices and capacity may be this stale. 0: off.
LIVEPEER_DISCOVERY_CACHE_SECONDS: float = env.float("LIVEPEER_DISCOVERY_CACHE_SECONDS", default=5.0)
LIVEPEER_QUEUE_POLL_INTERVAL: float = env.float("LIVEPEER_QUEUE_POLL_INTERVAL", default=1.0)
LIVEPEER_QUEUE_TIMEOUT: float = env.float("LIVEPEER_QUEUE_TIMEOUT", default=120.0)
LIVEPEER_MAX_IMAGE_BYTES: int = env.int("LIVEPEER_MAX_IMAGE_BYTES", default=20_000_000)
LIVEPEER_MAX_PRICE_MARKUP: str = env.str("LIVEPEER_MAX_PRICE_MARKUP", default="1.012")
# Cap on every JSON body read from a signer, runner or gateway (an image result may
# be larger by the base64 of LIVEPEER_MAX_IMAGE_BYTES).
LIVEPEER_MAX_RESPONSE_BYTES: int = env.int("LIVEPEER_MAX_RESPONSE_BYTES", default=1_000_000)
# Runner, image and queue URLs that resolve to loopback, private, link-local or
# metadata addresses are refused unless this is on (the sandbox, tests, `make run`).
LIVEPEER_ALLOW_PRIVATE_ADDRESSES: bool = env.bool("LIVEPEER_ALLOW_PRIVATE_ADDRESSES", default=False)
# The app's own path below a runner's `…/apps/{id}/app/` (empty: the app root).
LIVEPEER_RUNNER_APP_PATH: str = env.str("LIVEPEER_RUNNER_APP_PATH", default="")

# Completion webhooks (accounts/webhooks.py, integrations/webhooks): the receiver's URL is
# a user's, so it goes through LIVEPEER_ALLOW_PRIVATE_ADDRESSES's address guard too.
WEBHOOK_CONNECT_TIMEOUT_SECONDS: float = env.float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=3.05)
WEBHOOK_READ_TIMEOUT_SECONDS: float = env.float("WEBHOOK_READ_TIMEOUT_SECONDS", default=10.0)
# Attempt n+1 comes FIRST × 2^n seconds after attempt n (at most MAX, jittered), until
# WINDOW seconds after the event; MAX stays below the broker's visibility timeout.
WEBHOOK_RETRY_FIRST_SECONDS: float = env.float("WEBHOOK_RETRY_FIRST_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS: float = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3000.0)
WEBHOOK_RETRY_WINDOW_SECONDS: float = env.float("WEBHOOK_RETRY_WINDOW_SECONDS", default=86400.0)
if not (
    0 < WEBHOOK_RETRY_FIRST_SECONDS <= WEBHOOK_RETRY_MAX_SECONDS < BROKER_VISIBILITY_TIMEOUT_SECONDS
):
    raise ImproperlyConfigured(
        "Need 0 < WEBHOOK_RETRY_FIRST_SECONDS <= WEBHOOK_RETRY_MAX_SECONDS < "
        f"the broker visibility timeout ({BROKER_VISIBILITY_TIMEOUT_SECONDS} s)."
    )
if WEBHOOK_CONNECT_TIMEOUT_SECONDS <= 0 or WEBHOOK_READ_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("WEBHOOK_*_TIMEOUT_SECONDS must be positive.")
# ai-gateway backend: go-livepeer's gateway pays with its own key and ignores the
# user's token, so pymthouse does NOT charge the end user for those calls. A user
# token is minted and sent only when this names a gateway that honours it.
LIVEPEER_GATEWAY_HONOURS_USER_TOKENS: bool = env.bool(
    "LIVEPEER_GATEWAY_HONOURS_USER_TOKENS", default=False
)


# The two clients' configurations, built once here from the values above: an invalid
# one (a URL without a scheme, a negative timeout, a markup below 1 …) stops the
# process at start-up with ImproperlyConfigured. The clients rebuild them from these
# same settings (tests override the flat names) and hold no defaults of their own.
def client_configs_validate(values: dict[str, Any]) -> None:
    from integrations.livepeer.config import LivepeerConfig
    from integrations.pymthouse.config import PymthouseConfig

    namespace = SimpleNamespace(**values)
    PymthouseConfig.from_settings(namespace)
    LivepeerConfig.from_settings(namespace)


client_configs_validate(globals())

INFERENCE_MODELS: list[str] = env.list(
    "INFERENCE_MODELS",
    default=["ByteDance/SDXL-Lightning", "black-forest-labs/FLUX.1-schnell"],
)
INFERENCE_MAX_PROMPT_LENGTH: int = env.int("INFERENCE_MAX_PROMPT_LENGTH", default=1000)
INFERENCE_MIN_SIZE: int = env.int("INFERENCE_MIN_SIZE", default=256)
INFERENCE_MAX_SIZE: int = env.int("INFERENCE_MAX_SIZE", default=1536)
INFERENCE_RATE_LIMIT_COUNT: int = env.int("INFERENCE_RATE_LIMIT_COUNT", default=10)
INFERENCE_RATE_LIMIT_WINDOW_SECONDS: int = env.int(
    "INFERENCE_RATE_LIMIT_WINDOW_SECONDS", default=60
)
INFERENCE_MAX_ACTIVE_PER_USER: int = env.int("INFERENCE_MAX_ACTIVE_PER_USER", default=4)
# Push of state changes (inference/events.py): without Redis, watched rows are read this
# often; an event stream ends after INFERENCE_STREAM_MAX_SECONDS (the client reconnects).
INFERENCE_STREAM_POLL_SECONDS: float = env.float("INFERENCE_STREAM_POLL_SECONDS", default=0.1)
INFERENCE_STREAM_MAX_SECONDS: int = env.int("INFERENCE_STREAM_MAX_SECONDS", default=300)
if INFERENCE_STREAM_POLL_SECONDS <= 0 or INFERENCE_STREAM_MAX_SECONDS <= 0:
    raise ImproperlyConfigured(
        "INFERENCE_STREAM_POLL_SECONDS and INFERENCE_STREAM_MAX_SECONDS must be positive."
    )
INFERENCE_MAX_RETRIES: int = env.int("INFERENCE_MAX_RETRIES", default=4)
# Lifecycle: a generation is started at most INFERENCE_MAX_ATTEMPTS times (retries,
# redeliveries after a worker died, reconcile); reconcile re-sends a queued
# generation's message at most once per INFERENCE_REQUEUE_AFTER_SECONDS.
INFERENCE_MAX_ATTEMPTS: int = env.int("INFERENCE_MAX_ATTEMPTS", default=8)
INFERENCE_REQUEUE_AFTER_SECONDS: int = env.int("INFERENCE_REQUEUE_AFTER_SECONDS", default=900)
if INFERENCE_MAX_ATTEMPTS <= INFERENCE_MAX_RETRIES:
    raise ImproperlyConfigured("INFERENCE_MAX_ATTEMPTS must exceed INFERENCE_MAX_RETRIES.")
# Every retry countdown (an upstream's Retry-After included) is capped here, below
# the reconcile window and the broker visibility timeout, or delayed retries run twice.
TASK_RETRY_MAX_DELAY_SECONDS: float = env.float("TASK_RETRY_MAX_DELAY_SECONDS", default=600.0)
if not (
    TASK_RETRY_BACKOFF_MAX_SECONDS
    <= TASK_RETRY_MAX_DELAY_SECONDS
    < min(INFERENCE_REQUEUE_AFTER_SECONDS, BROKER_VISIBILITY_TIMEOUT_SECONDS)
):
    raise ImproperlyConfigured(
        "Need TASK_RETRY_BACKOFF_MAX_SECONDS <= TASK_RETRY_MAX_DELAY_SECONDS < "
        "min(INFERENCE_REQUEUE_AFTER_SECONDS, broker visibility timeout)."
    )
# Ordering that keeps redelivery sane (asserted by a test):
# broker visibility timeout > hard limit > soft limit > any single HTTP timeout.
INFERENCE_SOFT_TIME_LIMIT: int = env.int("INFERENCE_SOFT_TIME_LIMIT", default=300)
INFERENCE_TIME_LIMIT: int = env.int("INFERENCE_TIME_LIMIT", default=330)

# --- Billing (the local ledger, in USD micros; docs/billing.md) --------------
# How the operator's pymthouse app bills (pymthouse ``app_billing_config.billing_mode``;
# set it to what the app is configured as): ``owner_rollup`` (pymthouse's default: the
# operator's wallet pays every network fee and the operator bills its users from the
# local ledger, taking payments through its own Stripe account) or ``merchant`` (each
# user is a pymthouse customer: pymthouse's wallet is the user's balance, top-ups and
# plans go through pymthouse checkout, and no local retail charge is made).
BILLING_MODES = ("owner_rollup", "merchant")
BILLING_MODE: str = env.str("BILLING_MODE", default="owner_rollup")
if BILLING_MODE not in BILLING_MODES:
    raise ImproperlyConfigured(
        f"BILLING_MODE must be one of {', '.join(BILLING_MODES)}, not {BILLING_MODE!r}"
    )
# --- Card payments through the operator's own Stripe (owner_rollup; docs/billing.md) ---
# Empty secret key = card payments are off (the pages say so). The secret key reaches
# only integrations/stripe (never a log, a task argument or a page); the publishable key
# and the Stripe.js URL go to the browser. STRIPE_API_BASE and STRIPE_JS_URL point at
# localstripe in `make run` and the tests (sandbox/stripe.py).
STRIPE_SECRET_KEY: str = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY: str = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET: str = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE: str = env.str("STRIPE_API_BASE", default="https://api.stripe.com").rstrip("/")
STRIPE_JS_URL: str = env.str("STRIPE_JS_URL", default="https://js.stripe.com/v3/")
STRIPE_TIMEOUT_SECONDS: float = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
# What "Add credit" offers (USD micros; whole cents): presets and the custom range.
BILLING_CREDIT_PRESETS_MICROS: list[int] = env.list(
    "BILLING_CREDIT_PRESETS_MICROS", cast=int, default=[10_000_000, 25_000_000, 50_000_000]
)
BILLING_CREDIT_MIN_MICROS: int = env.int("BILLING_CREDIT_MIN_MICROS", default=5_000_000)
BILLING_CREDIT_MAX_MICROS: int = env.int("BILLING_CREDIT_MAX_MICROS", default=500_000_000)
# Auto top-up defaults shown on the page (the user picks their own; USD micros).
BILLING_AUTO_TOPUP_THRESHOLD_MICROS: int = env.int(
    "BILLING_AUTO_TOPUP_THRESHOLD_MICROS", default=5_000_000
)
BILLING_AUTO_TOPUP_AMOUNT_MICROS: int = env.int(
    "BILLING_AUTO_TOPUP_AMOUNT_MICROS", default=25_000_000
)


def stripe_settings_validate(values: dict[str, Any]) -> None:
    """Refuse an unusable payments configuration at start-up (ImproperlyConfigured)."""
    from urllib.parse import urlsplit

    cent = 10_000
    limits = ("BILLING_CREDIT_MIN_MICROS", "BILLING_CREDIT_MAX_MICROS")
    low, high = (values[name] for name in limits)
    if not 0 < low <= high or low % cent or high % cent:
        raise ImproperlyConfigured(
            "Need 0 < BILLING_CREDIT_MIN_MICROS <= BILLING_CREDIT_MAX_MICROS, whole cents."
        )
    presets = values["BILLING_CREDIT_PRESETS_MICROS"]
    if not presets or any(p % cent or not low <= p <= high for p in presets):
        raise ImproperlyConfigured(
            "BILLING_CREDIT_PRESETS_MICROS must be whole cents within the credit limits."
        )
    threshold = values["BILLING_AUTO_TOPUP_THRESHOLD_MICROS"]
    amount = values["BILLING_AUTO_TOPUP_AMOUNT_MICROS"]
    if threshold < 0 or threshold % cent or amount % cent or not low <= amount <= high:
        raise ImproperlyConfigured(
            "BILLING_AUTO_TOPUP_AMOUNT_MICROS must be whole cents within the credit limits "
            "and BILLING_AUTO_TOPUP_THRESHOLD_MICROS whole cents, not negative."
        )
    for name in ("STRIPE_API_BASE", "STRIPE_JS_URL"):
        parts = urlsplit(values[name])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured(f"{name} must be an http(s) URL, not {values[name]!r}")
    if values["STRIPE_SECRET_KEY"]:
        if not values["STRIPE_SECRET_KEY"].startswith(("sk_", "rk_")):
            raise ImproperlyConfigured("STRIPE_SECRET_KEY must be a Stripe secret key (sk_…).")
        if not values["STRIPE_PUBLISHABLE_KEY"].startswith("pk_"):
            raise ImproperlyConfigured("STRIPE_PUBLISHABLE_KEY (pk_…) is required with a key.")
        if not values["STRIPE_WEBHOOK_SECRET"]:
            raise ImproperlyConfigured("STRIPE_WEBHOOK_SECRET is required with a secret key.")
    if values["STRIPE_TIMEOUT_SECONDS"] <= 0:
        raise ImproperlyConfigured("STRIPE_TIMEOUT_SECONDS must be positive.")


stripe_settings_validate(globals())
# Merchant mode (docs/billing.md "Merchant mode"): admission re-reads the user's
# pymthouse wallet when the local copy is older than this many seconds.
BILLING_WALLET_MAX_AGE_SECONDS: int = env.int("BILLING_WALLET_MAX_AGE_SECONDS", default=5)
# The return page after a pymthouse checkout polls the wallet this long for the credit
# (pymthouse learns of the payment from Stripe's webhook), then says "still processing".
BILLING_TOPUP_CONFIRM_SECONDS: int = env.int("BILLING_TOPUP_CONFIRM_SECONDS", default=60)
# Top-up amounts offered on "Add credit" in merchant mode (whole dollars; pymthouse
# accepts $1.00 to $10,000.00 with at most two decimals).
BILLING_TOPUP_PRESETS_USD: list[str] = env.list(
    "BILLING_TOPUP_PRESETS_USD", default=["10", "25", "50"]
)
# How many merchant wallets one beat run re-reads (least recently read first).
BILLING_WALLET_SYNC_LIMIT: int = env.int("BILLING_WALLET_SYNC_LIMIT", default=200)
if not all(p.isdigit() and 1 <= int(p) <= 10_000 for p in BILLING_TOPUP_PRESETS_USD):
    raise ImproperlyConfigured(
        "BILLING_TOPUP_PRESETS_USD must be whole dollars from 1 to 10000 (pymthouse's limits)."
    )
if BILLING_WALLET_MAX_AGE_SECONDS < 0 or BILLING_TOPUP_CONFIRM_SECONDS < 1:
    raise ImproperlyConfigured(
        "BILLING_WALLET_MAX_AGE_SECONDS must be >= 0 and BILLING_TOPUP_CONFIRM_SECONDS >= 1."
    )
# Plan every new user starts on (a slug seeded by billing.services.plans_seed).
BILLING_DEFAULT_PLAN: str = env.str("BILLING_DEFAULT_PLAN", default="free")
# Length of a subscription period bought by a user (and of each renewal), in days.
BILLING_SUBSCRIPTION_PERIOD_DAYS: int = env.int("BILLING_SUBSCRIPTION_PERIOD_DAYS", default=30)
if BILLING_SUBSCRIPTION_PERIOD_DAYS < 1:
    raise ImproperlyConfigured("BILLING_SUBSCRIPTION_PERIOD_DAYS must be at least 1")
#: How long before a subscription period ends its renewal is charged to the saved card
#: (the beat job billing-renew-subscriptions; docs/billing.md "Paying for a plan").
BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS: int = env.int(
    "BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS", default=86_400
)
if not 0 < BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS < BILLING_SUBSCRIPTION_PERIOD_DAYS * 86_400:
    raise ImproperlyConfigured(
        "BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS must be positive and shorter than a period"
    )
# Per-image fee (wei) assumed when no runner price has been observed for a model,
# and the charge on the ai-gateway backend, where no fee is known at payment time.
BILLING_ESTIMATED_FEE_WEI: str = env.str("BILLING_ESTIMATED_FEE_WEI", default="5000000000000")
# The configured ETH/USD rate (a decimal string, USD per ETH): network fees (wei) are
# converted to USD at pymthouse's own metered rate while one is fresh, else at this.
BILLING_ETH_USD_RATE: str = env.str("BILLING_ETH_USD_RATE", default="3000")
# Charge a paid call that delivered no image (the runner sent a wrong-size image, or a
# known error after payment)? Off: its charge is refunded (a ``refund`` ledger entry;
# the usage debit stays, so staff see the network cost). ``outcome_unknown`` is never
# refunded when it ends: the usage mirror settles it.
BILLING_CHARGE_UNDELIVERED: bool = env.bool("BILLING_CHARGE_UNDELIVERED", default=False)
# A rate taken from pymthouse's metering (the mirrored manifests' feeWei and exact USD)
# is used for this long after the manifest's sync; then the configured rate again.
BILLING_METERED_RATE_MAX_AGE_SECONDS: int = env.int(
    "BILLING_METERED_RATE_MAX_AGE_SECONDS", default=3600
)
# A runner price more than this factor above the last adopted one for a model is not
# adopted as the base of holds: it is shown to staff (Observed prices) instead.
BILLING_PRICE_JUMP_FACTOR: str = env.str("BILLING_PRICE_JUMP_FACTOR", default="3")
# Available-balance thresholds (USD micros, comma-separated) that show a low-balance
# notice: $5 and $1 by default.
BILLING_LOW_BALANCE_THRESHOLDS_MICROS: list[str] = env.list(
    "BILLING_LOW_BALANCE_THRESHOLDS_MICROS", default=["5000000", "1000000"]
)
# The largest amount staff may grant or deduct at once (USD micros; $100,000).
BILLING_MAX_STAFF_AMOUNT_MICROS: int = env.int(
    "BILLING_MAX_STAFF_AMOUNT_MICROS", default=100_000_000_000
)
# A hold whose generation ended in an unknown outcome waits this long for the usage
# mirror to show its manifest, then is released and reported.
BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS: int = env.int(
    "BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS", default=86400
)
# Holds younger than this are left alone by the stale-hold sweep.
BILLING_STALE_HOLD_AFTER_SECONDS: int = env.int("BILLING_STALE_HOLD_AFTER_SECONDS", default=900)
# How many open holds one sweep run looks at (least recently looked-at first).
BILLING_STALE_HOLD_SWEEP_LIMIT: int = env.int("BILLING_STALE_HOLD_SWEEP_LIMIT", default=2000)

# --- Usage mirror (usage/services/sync.py) ---------------------------------
# The beat schedule of the sync lives in django-celery-beat (editable in the admin);
# this interval only seeds it. The window starts at BILLING_USAGE_SYNC_START (ISO
# date-time; empty = all time) and ends at the run's start.
BILLING_USAGE_SYNC_INTERVAL_SECONDS: int = env.int(
    "BILLING_USAGE_SYNC_INTERVAL_SECONDS", default=60 if DEBUG else 300
)
_usage_sync_start = env.str("BILLING_USAGE_SYNC_START", default="")
BILLING_USAGE_SYNC_START: datetime | None = (
    datetime.fromisoformat(_usage_sync_start).astimezone(UTC) if _usage_sync_start else None
)
BILLING_USAGE_SYNC_LEASE_SECONDS: int = env.int("BILLING_USAGE_SYNC_LEASE_SECONDS", default=900)
BILLING_USAGE_SYNC_CHUNK: int = env.int("BILLING_USAGE_SYNC_CHUNK", default=500)
BILLING_USAGE_SYNC_CONCURRENCY: int = env.int("BILLING_USAGE_SYNC_CONCURRENCY", default=16)
# At least this many users new to the mirror in one run: their manifests are read for the
# whole app in day windows (usage/services/appwide.py) instead of one call per user.
BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS: int = env.int(
    "BILLING_USAGE_SYNC_APP_WIDE_MIN_USERS", default=200
)
# Users new to the mirror applied per transaction from the app-wide rows (their rows are
# staged on disk; memory is bounded by one such chunk: about 1.6 KB per manifest row).
BILLING_USAGE_SYNC_APP_WIDE_CHUNK: int = env.int("BILLING_USAGE_SYNC_APP_WIDE_CHUNK", default=2000)
# Drift: a (user, day) whose metered cost exceeds our usage debits by more than this
# many wei is an alert (log + staff dashboard); days re-checked for new local debits.
BILLING_DRIFT_ALERT_WEI: int = env.int("BILLING_DRIFT_ALERT_WEI", default=0)
BILLING_DRIFT_DAYS: int = env.int("BILLING_DRIFT_DAYS", default=2)
BILLING_STAFF_PAGE_SIZE: int = env.int("BILLING_STAFF_PAGE_SIZE", default=50)

# --- Periodic jobs ---------------------------------------------------------
# Every periodic job, in one place: seeded into django-celery-beat after migrate
# (usage.services.schedule.periodic_jobs_seed), never overwriting an admin edit.
# ``expire_seconds``: a run not started by then is dropped (the next one follows).
PERIODIC_JOBS: dict[str, dict[str, Any]] = {
    # Every minute: re-enqueue generations whose message was lost, fail the
    # ones a dead worker left running past the hard time limit.
    "inference-reconcile-generations": {
        "task": "inference.tasks.generations_reconcile_task",
        "every": 60,
        "expire_seconds": 50,
        "description": "Re-enqueue lost generations; fail abandoned runs.",
    },
    # Every 5 minutes: re-enqueue users whose pymthouse provisioning is still
    # pending (a lost broker message or a crashed worker must not strand them).
    "accounts-provision-pending-users": {
        "task": "accounts.tasks.provision_pending_users_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Re-enqueue users whose pymthouse provisioning is pending.",
    },
    # Every 5 minutes: settle or release billing holds whose generation ended
    # without its hook running, and release (and report) unknown outcomes that
    # the usage mirror has not resolved within BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS.
    "billing-resolve-stale-holds": {
        "task": "inference.tasks.holds_resolve_stale_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Settle or release stale billing holds.",
    },
    # Every hour: forget Idempotency-Keys older than 24 hours (inference/services/idempotency.py;
    # a submit also ignores an expired key, so this only keeps the table small).
    "inference-purge-idempotency-keys": {
        "task": "inference.tasks.idempotent_requests_purge_task",
        "every": 3600,
        "expire_seconds": 3000,
        "description": "Forget Idempotency-Keys older than 24 hours.",
    },
    # Every 5 minutes: re-send webhook deliveries whose retry is 10 minutes overdue (a
    # retry's countdown lives in the worker that got it; accounts/webhooks.py).
    "accounts-resend-due-webhooks": {
        "task": "accounts.tasks.webhook_deliveries_resend_due_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Re-send webhook deliveries whose retry is overdue.",
    },
    # Merchant mode only (the task does nothing in owner_rollup): re-read users'
    # pymthouse wallets into the ledger (top-ups that landed, consumption).
    "billing-merchant-wallets": {
        "task": "billing.tasks.merchant_wallets_refresh_task",
        "every": 60,
        "expire_seconds": 50,
        "description": "Mirror users' pymthouse wallets into the ledger (merchant mode).",
    },
    # Every 5 minutes: take back what expired promotional credit has left (once per
    # lot; the admission of the owner's next image does it first if it comes sooner).
    "billing-expire-promotional-credit": {
        "task": "billing.tasks.promotions_expire_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Take back the rest of expired promotional credit.",
    },
    # Every 5 minutes: apply the plan changes users scheduled for the end of their
    # subscription period (downgrades and cancellations; billing/services/subscriptions.py).
    "billing-apply-scheduled-plan-changes": {
        "task": "billing.tasks.plan_changes_apply_due_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Apply plan changes scheduled for the end of a subscription period.",
    },
    # Every 5 minutes: charge the saved card for the subscriptions ending within
    # BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS (once per account and period).
    "billing-renew-subscriptions": {
        "task": "billing.tasks.subscription_renewals_task",
        "every": 300,
        "expire_seconds": 240,
        "description": "Renew subscriptions by card shortly before their period ends.",
    },
    # Mirror pymthouse usage (groupBy=user, then groupBy=manifest per changed user).
    "usage-sync": {
        "task": "usage.tasks.usage_sync_task",
        "every": BILLING_USAGE_SYNC_INTERVAL_SECONDS,
        "expire_seconds": max(BILLING_USAGE_SYNC_INTERVAL_SECONDS - 5, 5),
        "description": (
            "Mirror pymthouse usage (groupBy=user, then groupBy=manifest per changed user)."
        ),
    },
}

# --- Logging ----------------------------------------------------------------
LOG_LEVEL: str = env.str("DJANGO_LOG_LEVEL", default="INFO")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
    },
}
