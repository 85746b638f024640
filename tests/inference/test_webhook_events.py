"""Each terminal state of a generation records one webhook event, in the transaction that
ends it, carrying the generation resource with its money."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accounts import webhooks
from accounts.models import WebhookDelivery
from inference.models import FailureCode
from inference.services import generation_create
from inference.services.transitions import generation_cancel, generation_fail
from inference.services.webhook_events import generation_event_record
from tests.factories import UserFactory
from tests.inference.paying_user import pay_as_you_go_user

pytestmark = pytest.mark.django_db

RELEASED_MONEY = {
    "quoted_micros": "18000",
    "quoted": "$0.02",
    "held_micros": "0",
    "held": "$0.00",
    "hold_status": "released",
    "charged_micros": None,
    "charged": None,
    "refunded_micros": None,
    "refunded": None,
}


def _sends(callbacks: list[Any]) -> list[Any]:
    """The webhook sends among after-commit callbacks (with Redis, the event stream's
    publish is one too: ``inference.events.generation_changed``)."""
    return [callback for callback in callbacks if "_delivery_enqueue" in callback.__qualname__]


def _queued(user: Any, django_capture_on_commit_callbacks: Any) -> Any:
    with django_capture_on_commit_callbacks(execute=False):
        return generation_create(owner=user, prompt="a red fox")


def _with_endpoint() -> Any:
    user = pay_as_you_go_user()
    webhooks.webhook_endpoint_set(user=user, url="http://127.0.0.1:9/hook", acting_user=user)
    return user


def test_a_canceled_generation_records_one_event_with_its_released_hold(
    django_capture_on_commit_callbacks: Any,
) -> None:
    user = _with_endpoint()
    generation = _queued(user, django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.count() == 0  # queued is not terminal
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert generation_cancel(generation_id=generation.pk, code=FailureCode.ACCOUNT_CLOSED)
    assert len(_sends(callbacks)) == 1  # the send, after commit

    delivery = WebhookDelivery.objects.get()
    body = json.loads(delivery.body)
    assert (delivery.event_type, delivery.subject_id) == ("generation.canceled", str(generation.pk))
    assert body["type"] == "generation.canceled"
    assert body["id"] == delivery.event_id
    assert body["data"]["id"] == str(generation.pk)
    assert body["data"]["status"] == "canceled"
    assert body["data"]["money"] == RELEASED_MONEY
    assert body["data"]["cost"] == {"usd_micros": None, "wei": None}

    with django_capture_on_commit_callbacks(execute=False) as again:
        generation_event_record(generation_id=generation.pk)
    assert _sends(again) == []  # once per generation and type
    assert WebhookDelivery.objects.count() == 1


def test_a_failure_before_payment_records_generation_failed(
    django_capture_on_commit_callbacks: Any,
) -> None:
    user = _with_endpoint()
    generation = _queued(user, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        assert generation_fail(generation_id=generation.pk, code=FailureCode.UPSTREAM_UNAVAILABLE)
    delivery = WebhookDelivery.objects.get()
    data = json.loads(delivery.body)["data"]
    assert delivery.event_type == "generation.failed"
    assert data["error"]["code"] == "upstream_unavailable"
    assert data["money"] == RELEASED_MONEY


def test_no_endpoint_no_event_and_nothing_enqueued(django_capture_on_commit_callbacks: Any) -> None:
    generation = _queued(UserFactory(), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert generation_cancel(generation_id=generation.pk, code=FailureCode.ACCOUNT_CLOSED)
    assert _sends(callbacks) == []
    assert WebhookDelivery.objects.count() == 0
