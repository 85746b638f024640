"""Personal API keys: the API page, bearer authentication, revocation, expiry, rate limit."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    user_delete,
    user_set_active,
)
from inference.models import Generation
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAGE = "/accounts/api/"
LIST = "/api/v1/generations"
SECRET_RE = re.compile(r"phk_[A-Za-z0-9_-]{43}")


@pytest.fixture
def user(django_capture_on_commit_callbacks) -> User:
    with django_capture_on_commit_callbacks():
        return UserFactory()


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _new_key(user: User, **fields) -> str:
    created = api_key_create(
        user=user,
        name=fields.pop("name", "script"),
        acting_user=user,
        **{"expires_at": None, **fields},
    )
    return created.secret.reveal()


def _bearer(secret: str, method: str = "get", path: str = LIST, **kwargs):
    return getattr(Client(enforce_csrf_checks=True), method)(
        path, HTTP_AUTHORIZATION=f"Bearer {secret}", **kwargs
    )


def test_the_page_creates_a_key_shows_its_secret_once_and_stores_only_its_hash(
    browser: Client, user: User
) -> None:
    response = browser.post(PAGE, {"name": "  nightly   batch ", "expires_in_days": "30"})

    assert response.status_code == 200
    html = response.content.decode()
    secrets_shown = set(SECRET_RE.findall(html))
    assert len(secrets_shown) == 1
    secret = secrets_shown.pop()
    key = ApiKey.objects.get()
    assert key.user_id == user.pk
    assert key.name == "nightly batch"
    assert key.prefix == secret[:12]
    assert key.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert timedelta(days=29, hours=23) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert key.last_used_at is None
    assert key.revoked_at is None
    # The secret is in no column of the row.
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(secret in str(value) for value in row.values())
    # The curl example carries it, ready to paste.
    assert f"export PIXELHOUSE_API_KEY={secret}" in html

    # Reloading the page never shows it again: the list shows the prefix only.
    again = browser.get(PAGE).content.decode()
    assert secret not in again
    assert SECRET_RE.search(again) is None
    assert f"<code>{key.prefix}…</code>" in again
    assert "nightly batch" in again


def test_a_key_needs_a_name_and_nothing_is_created_without_one(browser: Client) -> None:
    response = browser.post(PAGE, {"name": "   ", "expires_in_days": ""})

    assert response.status_code == 400
    assert "Name the key (for example, the script that will use it)." in response.content.decode()
    assert ApiKey.objects.count() == 0


def test_the_api_page_needs_a_signed_in_user(client: Client) -> None:
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_key_authenticates_api_calls_as_its_user_without_csrf(
    user: User, django_capture_on_commit_callbacks
) -> None:
    secret = _new_key(user)
    with django_capture_on_commit_callbacks() as callbacks:
        created = _bearer(
            secret,
            "post",
            content_type="application/json",
            data=json.dumps({"prompt": "a red fox"}),
        )

    assert created.status_code == 201
    generation = Generation.objects.get()
    assert generation.owner_id == user.pk
    assert len(callbacks) == 1
    listed = _bearer(secret)
    assert listed.status_code == 200
    assert listed.json()["count"] == 1


@pytest.mark.parametrize(
    "state", ["revoked", "expired", "deactivated", "deleted", "unknown", "truncated"]
)
def test_a_refused_key_is_a_401_and_makes_nothing(
    user: User, state: str, django_capture_on_commit_callbacks
) -> None:
    secret = _new_key(user)
    key = ApiKey.objects.get()
    with django_capture_on_commit_callbacks():
        if state == "revoked":
            api_key_revoke(api_key=key, acting_user=user)
        elif state == "expired":
            ApiKey.objects.filter(pk=key.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
        elif state == "deactivated":
            user_set_active(user=user, is_active=False, acting_user=None)
        elif state == "deleted":
            user_delete(user=user, acting_user=None)
    if state == "unknown":
        secret = "phk_" + "A" * 43
    elif state == "truncated":
        secret = secret[:-1]

    with django_capture_on_commit_callbacks() as callbacks:
        response = _bearer(
            secret, "post", content_type="application/json", data=json.dumps({"prompt": "x"})
        )

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication required."}
    assert response["WWW-Authenticate"] == 'Bearer realm="pixelhouse"'
    assert Generation.objects.count() == 0
    assert callbacks == []
    key.refresh_from_db()
    assert key.last_used_at is None
    if state == "deleted":
        assert key.revoked_at is not None  # deleting the account revoked its keys


def test_revoking_from_the_page_stops_the_key_and_another_users_key_is_a_404(
    browser: Client, user: User
) -> None:
    secret = _new_key(user, name="old script")
    key = ApiKey.objects.get()
    assert _bearer(secret).status_code == 200

    other = UserFactory()
    other_client = Client()
    other_client.force_login(other)
    assert other_client.post(f"/accounts/api/{key.pk}/revoke/").status_code == 404
    assert _bearer(secret).status_code == 200

    response = browser.post(f"/accounts/api/{key.pk}/revoke/")
    assert response.status_code == 302
    assert response["Location"] == PAGE
    assert _bearer(secret).status_code == 401
    key.refresh_from_db()
    first_revocation = key.revoked_at
    assert first_revocation is not None
    page = browser.get(PAGE).content.decode()
    assert "Revoked" in page
    # Revoking again keeps the first time.
    api_key_revoke(api_key=key, acting_user=user)
    key.refresh_from_db()
    assert key.revoked_at == first_revocation


def test_each_key_is_rate_limited_with_retry_after(user: User, settings) -> None:
    settings.API_KEY_RATE_LIMIT_COUNT = 3
    settings.API_KEY_RATE_LIMIT_WINDOW_SECONDS = 3600
    secret = _new_key(user, name="a")
    other_secret = _new_key(user, name="b")

    statuses = [_bearer(secret).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    refused = _bearer(secret)
    assert refused.status_code == 429
    assert refused.json() == {
        "code": "rate_limited",
        "detail": "This API key made too many requests. Please wait a moment.",
    }
    assert 1 <= int(refused["Retry-After"]) <= 3600
    # Another key of the same user has its own allowance.
    assert _bearer(other_secret).status_code == 200


def test_last_used_moves_at_most_once_a_minute(user: User) -> None:
    secret = _new_key(user)
    key = ApiKey.objects.get()

    assert api_key_authenticate(secret=secret) == user
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    assert api_key_authenticate(secret=secret) == user
    key.refresh_from_db()
    assert key.last_used_at == first  # within the minute: no write

    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(seconds=61))
    assert api_key_authenticate(secret=secret) == user
    key.refresh_from_db()
    assert key.last_used_at > first - timedelta(seconds=1)


def test_a_key_is_never_logged(
    browser: Client,
    user: User,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = browser.post(PAGE, {"name": "logged?", "expires_in_days": ""})
    secret = SECRET_RE.search(response.content.decode()).group(0)
    with django_capture_on_commit_callbacks():
        assert _bearer(secret, "post", content_type="application/json",
                       data=json.dumps({"prompt": "a red fox"})).status_code == 201  # fmt: skip
    assert _bearer(secret[:-1]).status_code == 401
    key = ApiKey.objects.get()
    api_key_revoke(api_key=key, acting_user=user)
    assert _bearer(secret).status_code == 401

    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert key.prefix in logged  # the logs do name the key, by its visible prefix
    assert secret not in logged
    assert secret[len(key.prefix) :] not in logged
    assert secret[:-1] not in logged


@pytest.mark.django_db(transaction=True)
def test_the_pages_curl_example_works_against_this_server(live_server, sandbox) -> None:
    """The example, pasted into a shell, queues an image as the key's user."""
    user = UserFactory()
    client = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    client.force_login(user)
    html = client.post(PAGE, {"name": "curl", "expires_in_days": ""}).content.decode()
    example = re.search(r"<pre class=\"code-block\" data-curl-example>(.*?)</pre>", html, re.S)
    assert example is not None
    script = example.group(1).replace("&#x27;", "'").replace("&quot;", '"').replace("&amp;", "&")
    create_part = script.split(
        "\n\ncurl -sS " + live_server.url + "/api/v1/generations/GENERATION_ID"
    )[0]
    assert create_part.count("curl ") == 1

    completed = subprocess.run(
        ["/bin/sh", "-c", create_part], capture_output=True, text=True, timeout=30, check=False
    )

    assert completed.returncode == 0, completed.stderr
    body = json.loads(completed.stdout)
    generation = Generation.objects.get()
    assert body["id"] == str(generation.pk)
    assert generation.owner_id == user.pk
    assert (generation.prompt, generation.width, generation.height) == (
        "a lighthouse at dusk, oil painting",
        1024,
        1024,
    )
    assert shlex.split(create_part.splitlines()[0])  # the export line is valid shell


def test_staff_see_keys_by_prefix_only_and_may_revoke_them(user: User) -> None:
    secret = _new_key(user, name="leaked")
    key = ApiKey.objects.get()
    staff = UserFactory(is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)

    listing = admin.get("/admin/accounts/apikey/").content.decode()
    assert key.prefix in listing
    assert key.secret_sha256 not in listing
    assert secret not in listing
    assert admin.get("/admin/accounts/apikey/add/").status_code == 403

    response = admin.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert _bearer(secret).status_code == 401
