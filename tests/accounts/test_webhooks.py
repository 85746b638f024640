"""Completion webhooks: endpoint, signed delivery over real HTTP, retries, the guard, the page."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts import webhooks
from accounts.errors import WebhookEndpointInvalidError
from accounts.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from tests.factories import UserFactory
from tests.webhook_receiver import Received, webhook_receiver

pytestmark = pytest.mark.django_db

SECRET_PATTERN = re.compile(r"phwhsec_[A-Za-z0-9_-]{43}")


def _verify(received: Received, secret: str) -> int:
    """The receiver's check, written from the documented scheme; returns ``t``."""
    header = received.headers["Pixelhouse-Signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    return int(parts["t"])


def _endpoint(url: str) -> tuple[Any, WebhookEndpoint, str]:
    user = UserFactory()
    saved = webhooks.webhook_endpoint_set(user=user, url=url, acting_user=user)
    assert saved.secret is not None
    return user, saved.endpoint, saved.secret.reveal()


def test_a_test_event_is_signed_and_delivered_once(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with webhook_receiver() as receiver:
        user, endpoint, secret = _endpoint(receiver.url)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
        assert len(callbacks) == 1

    assert len(receiver.requests) == 1
    received = receiver.requests[0]
    assert received.path == "/hooks/pixelhouse"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Pixelhouse-Event-Id"] == delivery.event_id
    timestamp = _verify(received, secret)
    assert abs(timestamp - timezone.now().timestamp()) < 30
    body = json.loads(received.body)
    assert body["id"] == delivery.event_id
    assert body["type"] == "webhook.test"
    assert set(body) == {"id", "type", "created", "data"}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status, delivery.last_error) == (
        WebhookDeliveryStatus.DELIVERED,
        1,
        200,
        "",
    )
    assert delivery.next_attempt_at is None
    assert delivery.delivered_at is not None


def test_the_secret_is_stored_encrypted_and_kept_out_of_task_arguments_and_logs(
    django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    sent: list[tuple[Any, ...]] = []
    from accounts import tasks

    monkeypatch.setattr(tasks.webhook_delivery_send_task, "delay", lambda *a: sent.append(a))
    user, endpoint, secret = _endpoint("http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)

    assert sent == [(delivery.pk,)]
    stored = WebhookEndpoint.objects.values().get(pk=endpoint.pk)
    assert all(secret not in str(value) for value in stored.values())
    assert secret[8:] not in stored["secret_encrypted"]
    assert stored["secret_prefix"] == secret[:16]
    assert secret not in caplog.text


def test_a_failed_attempt_is_retried_with_backoff_then_given_up_after_a_day(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with webhook_receiver() as receiver:
        receiver.status = 500
        user, endpoint, _ = _endpoint(receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)

        first = webhooks.webhook_delivery_attempt(delivery_id=delivery.pk)
        assert first is not None
        assert 15 <= first <= 30  # WEBHOOK_RETRY_FIRST_SECONDS 30, equal jitter
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.response_status) == (
            WebhookDeliveryStatus.PENDING,
            1,
            500,
        )
        assert delivery.last_error == "the receiver answered 500"
        assert delivery.next_attempt_at is not None

        second = webhooks.webhook_delivery_attempt(delivery_id=delivery.pk)
        assert second is not None
        assert 30 <= second <= 60

        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            created_at=timezone.now() - timedelta(hours=24)
        )
        assert webhooks.webhook_delivery_attempt(delivery_id=delivery.pk) is None
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == (WebhookDeliveryStatus.FAILED, 3)
        assert delivery.next_attempt_at is None
        # Given up: another attempt sends nothing.
        assert webhooks.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # the same event every time


def test_private_addresses_are_refused_with_the_guard_on(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with webhook_receiver() as receiver:
        user, endpoint, _ = _endpoint(receiver.url)  # saved while the guard is off (tests)
        settings.LIVEPEER_ALLOW_PRIVATE_ADDRESSES = False
        other = UserFactory()
        with pytest.raises(WebhookEndpointInvalidError) as refused:
            webhooks.webhook_endpoint_set(user=other, url=receiver.url, acting_user=other)
        assert "non-public address 127.0.0.1" in refused.value.field_errors["url"]
        assert not WebhookEndpoint.objects.filter(user=other).exists()

        with django_capture_on_commit_callbacks(execute=False):
            delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
        assert webhooks.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        WebhookDeliveryStatus.FAILED,
        1,
        None,
    )
    assert "non-public address 127.0.0.1" in delivery.last_error


def test_metadata_and_non_http_urls_are_refused_even_in_tests() -> None:
    user = UserFactory()
    for url in ("http://169.254.169.254/latest", "ftp://example.com/x", "https://u:p@example.com/"):
        with pytest.raises(WebhookEndpointInvalidError):
            webhooks.webhook_endpoint_set(user=user, url=url, acting_user=user)
    assert WebhookEndpoint.objects.count() == 0


def test_rotating_the_secret_signs_with_the_new_one(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with webhook_receiver() as receiver:
        user, endpoint, old = _endpoint(receiver.url)
        rotated = webhooks.webhook_secret_rotate(endpoint=endpoint, acting_user=user)
        assert rotated.secret is not None
        new = rotated.secret.reveal()
        assert new != old
        with django_capture_on_commit_callbacks(execute=True):
            webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
    _verify(receiver.requests[0], new)
    with pytest.raises(AssertionError):
        _verify(receiver.requests[0], old)


def test_the_api_page_shows_the_secret_once_and_the_delivery_log(
    django_capture_on_commit_callbacks: Any,
) -> None:
    user = UserFactory()
    page = Client()
    page.force_login(user)
    with webhook_receiver() as receiver:
        created = page.post("/accounts/api/webhook/", {"url": receiver.url})
        assert created.status_code == 200
        secret = SECRET_PATTERN.search(created.content.decode()).group(0)
        again = page.get("/accounts/api/").content.decode()
        assert secret not in again
        assert f"{secret[:16]}…" in again
        with django_capture_on_commit_callbacks(execute=True):
            assert page.post("/accounts/api/webhook/test/").status_code == 302
        log = page.get("/accounts/api/").content.decode()
    assert len(receiver.requests) == 1
    delivery = WebhookDelivery.objects.get()
    assert f'data-webhook-delivery="{delivery.event_id}"' in log
    assert "Delivered" in log
    assert secret not in log

    removed = page.post("/accounts/api/webhook/delete/")
    assert removed.status_code == 302
    assert WebhookEndpoint.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0


def test_the_page_refuses_a_private_url_with_the_guard_on(settings: Any) -> None:
    settings.LIVEPEER_ALLOW_PRIVATE_ADDRESSES = False
    user = UserFactory()
    page = Client()
    page.force_login(user)
    answer = page.post("/accounts/api/webhook/", {"url": "http://10.0.0.7/hook"})
    assert answer.status_code == 400
    assert "non-public address 10.0.0.7" in answer.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_another_users_endpoint_is_never_touched() -> None:
    owner, endpoint, _ = _endpoint("http://127.0.0.1:9/hook")
    page = Client()
    page.force_login(UserFactory())
    for action in ("rotate", "delete", "test"):
        assert page.post(f"/accounts/api/webhook/{action}/").status_code == 404
    endpoint.refresh_from_db()
    assert WebhookDelivery.objects.count() == 0


def test_the_api_docs_page_is_the_apps_and_documents_the_signature() -> None:
    page = Client()
    page.force_login(UserFactory())
    html = page.get("/api/v1/docs").content.decode()
    assert "css/api-docs.css" in html
    assert 'href="/accounts/api/" data-api-page-link' in html
    assert 'id="swagger-ui"' in html
    schema = page.get("/api/v1/openapi.json").json()
    assert "Pixelhouse-Signature: t=<unix seconds>,v1=<hex>" in schema["info"]["description"]
    generation = schema["components"]["schemas"]["GenerationOut"]
    assert {"money", "network", "cost"} <= set(generation["required"])
    api_page = page.get("/accounts/api/").content.decode()
    assert 'href="/api/v1/docs"' in api_page


def test_the_sweep_resends_only_overdue_pending_deliveries(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with webhook_receiver() as receiver:
        user, endpoint, secret = _endpoint(receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            lost = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
            fresh = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
            crashed = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
        long_ago = timezone.now() - timedelta(minutes=11)
        WebhookDelivery.objects.filter(pk=lost.pk).update(next_attempt_at=long_ago)
        WebhookDelivery.objects.filter(pk=crashed.pk).update(
            next_attempt_at=None, last_attempt_at=long_ago, attempts=1
        )
        assert webhooks.webhook_deliveries_resend_due() == 2  # eager: sent at once
    assert sorted(json.loads(r.body)["id"] for r in receiver.requests) == sorted(
        [lost.event_id, crashed.event_id]
    )
    for request in receiver.requests:
        _verify(request, secret)
    fresh.refresh_from_db()
    assert (fresh.status, fresh.attempts) == (WebhookDeliveryStatus.PENDING, 0)
    assert WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.DELIVERED).count() == 2


def test_staff_read_the_delivery_log_in_the_admin_without_the_secret(
    django_capture_on_commit_callbacks: Any,
) -> None:
    user, endpoint, secret = _endpoint("http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=False):
        delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    listing = staff.get("/admin/accounts/webhookdelivery/").content.decode()
    detail = staff.get(f"/admin/accounts/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert delivery.event_id in listing
    assert delivery.event_id in detail
    for html in (listing, detail):
        assert secret not in html
        assert endpoint.secret_encrypted not in html
    assert staff.get("/admin/accounts/webhookdelivery/add/").status_code == 403


def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with webhook_receiver() as receiver:
        receiver.status = 302
        user, endpoint, _ = _endpoint(receiver.url)
        with django_capture_on_commit_callbacks(execute=False):
            delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
        assert webhooks.webhook_delivery_attempt(delivery_id=delivery.pk) is not None
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status, delivery.last_error) == (
        WebhookDeliveryStatus.PENDING,
        302,
        "the receiver answered 302",
    )


def test_the_task_leaves_a_failed_attempt_pending_for_its_retry(
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Eager, the task makes one attempt (a worker would retry it after its countdown)."""
    with webhook_receiver() as receiver:
        receiver.status = 503
        user, endpoint, _ = _endpoint(receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=user)
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        WebhookDeliveryStatus.PENDING,
        1,
        503,
    )
    assert delivery.next_attempt_at is not None
