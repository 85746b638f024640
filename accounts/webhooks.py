"""Completion webhooks: an account's endpoint, its events and their delivery.

Kept apart from ``services.py`` (near its size limit); the same rules apply (R3, R6).

* **Endpoint** (one per account): a URL that passes the address guard
  (``integrations.webhooks.url_refusal``, the runner URLs' ``LIVEPEER_ALLOW_PRIVATE_ADDRESSES``)
  and a signing secret, returned once by :func:`webhook_endpoint_set` and
  :func:`webhook_secret_rotate`, stored encrypted (the sender needs it in the clear, so it
  cannot be hashed), never logged and never put in a task argument.
* **Events**: the app above (inference) calls :func:`webhook_event_record` inside the
  transaction that ends a generation; the event's body is fixed there, and the send task
  is enqueued after commit with the delivery's id only.
* **Delivery**: :func:`webhook_delivery_attempt` claims one attempt (a conditional UPDATE:
  two workers never send the same attempt), reads the secret from the database, signs
  and POSTs outside any transaction, and records the answer. A 2xx is delivered; anything
  else is retried with exponential backoff (``WEBHOOK_RETRY_*``) until a day after the
  event; a refused URL (non-public address, not http(s)) fails at once, nothing sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.errors import WebhookEndpointInvalidError
from accounts.models import (
    WEBHOOK_SECRET_PREFIX,
    WEBHOOK_SECRET_VISIBLE_LENGTH,
    User,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from integrations.pymthouse import SecretToken
from integrations.webhooks import (
    SIGNATURE_HEADER,
    WebhookError,
    get_sender,
    signature_header,
    url_refusal,
)

logger = logging.getLogger(__name__)

TEST_EVENT_TYPE = "webhook.test"
#: How many deliveries the API page lists.
DELIVERY_LOG_LENGTH = 20
_FERNET_CONTEXT = b"pixelhouse:webhook-secret:v1:"


@dataclass(frozen=True)
class WebhookEndpointSaved:
    """An endpoint and, when it was made or rotated, its secret (shown once, never stored
    in the clear)."""

    endpoint: WebhookEndpoint
    secret: SecretToken | None


def _fernet() -> Fernet:
    # A key of its own, derived from DJANGO_SECRET_KEY (rotating that key makes the
    # stored secrets unreadable: each user then rotates theirs on the API page).
    digest = hashlib.sha256(_FERNET_CONTEXT + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def _secret_decrypt(token: str) -> SecretToken:
    return SecretToken(_fernet().decrypt(token.encode()).decode())


def _new_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


def _url_clean(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise WebhookEndpointInvalidError({"url": "Enter the URL that receives the events."})
    reason = url_refusal(url)
    if reason is not None:
        raise WebhookEndpointInvalidError(
            {"url": f"This URL cannot receive webhooks: it {reason}."}
        )
    return url


# --- endpoint ------------------------------------------------------------------


def webhook_endpoint_get(*, user_id: int) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(user_id=user_id).first()


@transaction.atomic
def webhook_endpoint_set(*, user: User, url: str, acting_user: User) -> WebhookEndpointSaved:
    """Set ``user``'s endpoint URL; a new endpoint gets a secret (returned once).

    Changing the URL of an existing endpoint keeps its secret (``secret`` is ``None``).
    """
    url = _url_clean(url)
    endpoint = WebhookEndpoint.objects.select_for_update().filter(user=user).first()
    secret: str | None = None
    if endpoint is None:
        secret = _new_secret()
        endpoint = WebhookEndpoint(
            user=user,
            url=url,
            secret_encrypted=_secret_encrypt(secret),
            secret_prefix=secret[:WEBHOOK_SECRET_VISIBLE_LENGTH],
            secret_rotated_at=timezone.now(),
        )
        endpoint.full_clean()
        endpoint.save()
    else:
        endpoint.url = url
        endpoint.full_clean()
        endpoint.save(update_fields=["url"])
    logger.info("webhook endpoint %s of user %s set by %s", endpoint.pk, user.pk, acting_user.pk)
    return WebhookEndpointSaved(
        endpoint=endpoint, secret=None if secret is None else SecretToken(secret)
    )


@transaction.atomic
def webhook_secret_rotate(*, endpoint: WebhookEndpoint, acting_user: User) -> WebhookEndpointSaved:
    """Replace the signing secret; the old one signs nothing from now on (pending
    retries are signed with the new one when they are sent)."""
    secret = _new_secret()
    endpoint.secret_encrypted = _secret_encrypt(secret)
    endpoint.secret_prefix = secret[:WEBHOOK_SECRET_VISIBLE_LENGTH]
    endpoint.secret_rotated_at = timezone.now()
    endpoint.full_clean()
    endpoint.save(update_fields=["secret_encrypted", "secret_prefix", "secret_rotated_at"])
    logger.info("webhook endpoint %s: secret rotated by %s", endpoint.pk, acting_user.pk)
    return WebhookEndpointSaved(endpoint=endpoint, secret=SecretToken(secret))


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, acting_user: User) -> None:
    """Remove the endpoint and its delivery log; nothing more is sent (a retry in flight
    finds no delivery)."""
    logger.info("webhook endpoint %s deleted by %s", endpoint.pk, acting_user.pk)
    endpoint.delete()


def webhook_endpoints_delete_for_user(*, user: User) -> int:
    """The account was deleted: its endpoint (a URL of theirs) goes."""
    deleted, _ = WebhookEndpoint.objects.filter(user=user).delete()
    return deleted


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first (the page's log)."""
    return endpoint.deliveries.order_by("-created_at", "-pk")[:DELIVERY_LOG_LENGTH]


# --- events --------------------------------------------------------------------


def _event_body(*, event_id: str, event_type: str, data: dict[str, Any]) -> str:
    return json.dumps(
        {"id": event_id, "type": event_type, "created": int(time.time()), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _delivery_enqueue(delivery_id: int) -> None:
    from accounts.tasks import webhook_delivery_send_task

    transaction.on_commit(lambda: webhook_delivery_send_task.delay(delivery_id))


def webhook_endpoint_exists(*, user_id: int) -> bool:
    """Whether ``user_id`` (active) has an endpoint: one cheap query, so a caller builds an
    event's body only for users who will receive it."""
    return WebhookEndpoint.objects.filter(user_id=user_id, user__is_active=True).exists()


def webhook_event_record(
    *,
    user_id: int,
    event_type: str,
    subject_id: str,
    data: dict[str, Any] | Callable[[], dict[str, Any]],
) -> WebhookDelivery | None:
    """Record an event for ``user_id``'s endpoint and send it after commit.

    Called inside the transaction that made the event happen. ``None`` when the user has
    no endpoint or is inactive. Once per ``(event_type, subject_id)``: a repeat returns
    the first delivery and enqueues nothing. ``data`` may be a callable, built only when
    there is an endpoint.
    """
    endpoint = WebhookEndpoint.objects.filter(user_id=user_id, user__is_active=True).first()
    if endpoint is None:
        return None
    if callable(data):
        data = data()
    event_id = f"evt_{uuid.uuid4().hex}"
    delivery, created = WebhookDelivery.objects.get_or_create(
        endpoint=endpoint,
        event_type=event_type,
        subject_id=subject_id,
        defaults={
            "event_id": event_id,
            "body": _event_body(event_id=event_id, event_type=event_type, data=data),
            "next_attempt_at": timezone.now(),
        },
    )
    if created:
        _delivery_enqueue(delivery.pk)
    return delivery


@transaction.atomic
def webhook_test_send(*, endpoint: WebhookEndpoint, acting_user: User) -> WebhookDelivery:
    """A ``webhook.test`` event (the page's "Send test event" button), sent after commit."""
    event_id = f"evt_{uuid.uuid4().hex}"
    data = {"message": "A test event from the API page. Nothing was made or charged."}
    delivery = WebhookDelivery(
        endpoint=endpoint,
        event_id=event_id,
        event_type=TEST_EVENT_TYPE,
        subject_id="",
        body=_event_body(event_id=event_id, event_type=TEST_EVENT_TYPE, data=data),
        next_attempt_at=timezone.now(),
    )
    delivery.full_clean()
    delivery.save()
    _delivery_enqueue(delivery.pk)
    logger.info("webhook test event %s queued by %s", delivery.pk, acting_user.pk)
    return delivery


# --- delivery ------------------------------------------------------------------


def webhook_retry_delay(*, attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: FIRST × 2^(attempts-1), at most MAX, with
    equal jitter (half fixed, half random)."""
    base = min(
        float(settings.WEBHOOK_RETRY_MAX_SECONDS),
        float(settings.WEBHOOK_RETRY_FIRST_SECONDS) * 2 ** max(0, attempts - 1),
    )
    return float(round(base / 2 + random.uniform(0, base / 2), 3))  # noqa: S311 (jitter)


def _claim(delivery: WebhookDelivery) -> bool:
    """Take the next attempt; False when another worker took it or it is no longer pending."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_attempt_at=None)
    if claimed:
        delivery.attempts += 1
        delivery.last_attempt_at = now
    return bool(claimed)


def webhook_delivery_attempt(*, delivery_id: int) -> float | None:
    """Make one attempt at ``delivery_id``; the seconds until the next one, or ``None``.

    ``None`` when it was delivered, has failed for good, is gone, or is not ours to send.
    """
    delivery = (
        WebhookDelivery.objects.select_related("endpoint")
        .filter(pk=delivery_id, status=WebhookDeliveryStatus.PENDING)
        .first()
    )
    if delivery is None or not _claim(delivery):
        return None
    endpoint = delivery.endpoint
    body = delivery.body.encode()
    try:
        secret = _secret_decrypt(endpoint.secret_encrypted)
    except InvalidToken:
        return _record(delivery, status=None, error="the signing secret is unreadable; rotate it")
    header = signature_header(secret=secret.reveal(), timestamp=int(time.time()), body=body)
    try:
        answer = get_sender().send(
            url=endpoint.url,
            body=body,
            headers={SIGNATURE_HEADER: header, "Pixelhouse-Event-Id": delivery.event_id},
        )
    except WebhookError as exc:
        return _record(delivery, status=None, error=exc.message, retryable=exc.retryable)
    if answer.delivered:
        return _record(delivery, status=answer.status_code, error="")
    return _record(
        delivery, status=answer.status_code, error=f"the receiver answered {answer.status_code}"
    )


def _record(
    delivery: WebhookDelivery, *, status: int | None, error: str, retryable: bool = True
) -> float | None:
    now = timezone.now()
    fields: dict[str, Any] = {"response_status": status, "last_error": error[:300]}
    delay: float | None = None
    if not error:
        fields.update(status=WebhookDeliveryStatus.DELIVERED, delivered_at=now)
    else:
        delay = webhook_retry_delay(attempts=delivery.attempts) if retryable else None
        window_end = delivery.created_at + timedelta(
            seconds=float(settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        )
        if delay is not None and now + timedelta(seconds=delay) <= window_end:
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
        else:
            delay = None
            fields["status"] = WebhookDeliveryStatus.FAILED
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(**fields)
    logger.info(
        "webhook delivery %s (%s) attempt %d: %s",
        delivery.pk,
        delivery.event_type,
        delivery.attempts,
        fields.get("status", f"retry in {delay}s") if error else "delivered",
    )
    return delay


#: A retry this late is taken to be lost (its worker stopped): the sweep sends it again.
RESEND_OVERDUE = timedelta(minutes=10)
RESEND_LIMIT = 500


def webhook_deliveries_resend_due(*, limit: int = RESEND_LIMIT) -> int:
    """Enqueue pending deliveries whose next attempt is overdue, or whose attempt was
    claimed long ago and never recorded; returns how many. A duplicate message is
    harmless: only one claims each attempt (``_claim``)."""
    cutoff = timezone.now() - RESEND_OVERDUE
    due = list(
        WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING)
        .filter(
            Q(next_attempt_at__lt=cutoff)
            | Q(next_attempt_at__isnull=True, last_attempt_at__lt=cutoff)
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    from accounts.tasks import webhook_delivery_send_task

    for delivery_id in due:
        webhook_delivery_send_task.delay(delivery_id)
    return len(due)
