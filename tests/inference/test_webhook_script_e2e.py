"""A script with only an API key and a webhook secret from the API page: it submits with
an Idempotency-Key, loses the first answer (a simulated timeout), retries the same POST,
and receives one signed ``generation.succeeded`` webhook that it verifies with the function
docs/api.md documents. Real HTTP everywhere: the script -> live server; a real Celery
worker -> sandbox runner -> webhook receiver (``http.server`` on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from accounts.models import WebhookDelivery, WebhookDeliveryStatus
from billing.models import Hold
from inference.models import Generation, GenerationStatus
from tests.helpers import wait_for
from tests.inference.paying_user import HOLD_MICROS, ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl
from tests.webhook_receiver import webhook_receiver
from tests.worker import running_worker

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BODY = {"prompt": "a lighthouse at dusk", "width": 512, "height": 512}


def documented_verify() -> Callable[..., dict[str, Any]]:
    """``verify_pixelhouse_webhook`` exactly as docs/api.md prints it."""
    text = DOCS.read_text()
    snippet = re.search(r"<!-- verify-snippet -->\n```python\n(.*?)```", text, re.S)
    assert snippet is not None, "docs/api.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(snippet.group(1), str(DOCS), "exec"), namespace)
    return namespace["verify_pixelhouse_webhook"]  # type: ignore[no-any-return]


@contextmanager
def answer_dropping_proxy(origin: str) -> Iterator[str]:
    """A loopback proxy that forwards one request to ``origin`` and never returns the
    answer: the server did the work, the client sees a timeout."""
    target = urlsplit(origin)
    listener = socket.create_server(("127.0.0.1", 0))
    forwarded = threading.Event()

    def serve() -> None:
        client, _ = listener.accept()
        with client, socket.create_connection((target.hostname, target.port)) as upstream:
            client.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += client.recv(65536)
            head, _, rest = request.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(rest) < length:
                rest += client.recv(65536)
            upstream.sendall(head + b"\r\n\r\n" + rest)
            upstream.settimeout(30)
            upstream.recv(65536)  # the server answered; the answer is dropped
            forwarded.set()
            try:  # keep the client's connection open until it gives up and closes it
                client.recv(1)
            except TimeoutError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(timeout=10)
        assert forwarded.is_set(), "the lost request never reached the server"


def submit(origin: str, key: str, idempotency_key: str, timeout: float) -> Any:
    request = urllib.request.Request(
        origin + "/api/v1/generations",
        method="POST",
        data=json.dumps(BODY).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        },
    )
    return urllib.request.urlopen(request, timeout=timeout)


def _page_secrets(live_server: Any, receiver_url: str) -> tuple[Any, str, str]:
    user = pay_as_you_go_user()
    page = Client(HTTP_HOST=live_server.url.removeprefix("http://"))
    page.force_login(user)
    html = page.post("/accounts/api/", {"name": "nightly", "expires_in_days": ""}).content.decode()
    api_key = re.search(r"phk_[A-Za-z0-9_-]{43}", html).group(0)
    html = page.post("/accounts/api/webhook/", {"url": receiver_url}).content.decode()
    webhook_secret = re.search(r"phwhsec_[A-Za-z0-9_-]{43}", html).group(0)
    return user, api_key, webhook_secret


def test_a_script_retries_after_a_timeout_and_verifies_one_signed_webhook(
    live_server: Any, sandbox: SandboxControl
) -> None:
    verify = documented_verify()
    with webhook_receiver() as receiver, running_worker(name="webhooks"):
        user, api_key, webhook_secret = _page_secrets(live_server, receiver.url)

        with answer_dropping_proxy(live_server.url) as lossy, pytest.raises(TimeoutError):
            submit(lossy, api_key, "nightly-2026-12-03-0001", timeout=2)
        with submit(live_server.url, api_key, "nightly-2026-12-03-0001", timeout=30) as answer:
            assert answer.status == 201
            assert answer.headers["Idempotent-Replayed"] == "true"
            created = json.loads(answer.read())

        wait_for(lambda: len(receiver.requests) >= 1, timeout=90)
        delivery = WebhookDelivery.objects.get()
        wait_for(
            lambda: WebhookDelivery.objects.filter(
                pk=delivery.pk, status=WebhookDeliveryStatus.DELIVERED
            ).exists(),
            timeout=10,
        )

    generation = Generation.objects.get()
    assert created["id"] == str(generation.pk)
    assert generation.status == GenerationStatus.SUCCEEDED
    # Charged once: one generation, one hold, one usage debit.
    assert Hold.objects.get().amount_micros == HOLD_MICROS
    kinds = ledger_kinds(user)
    assert kinds.count("hold") == 1
    assert kinds.count("usage_debit") == 1

    assert len(receiver.requests) == 1
    received = receiver.requests[0]
    event = verify(webhook_secret, received.headers["Pixelhouse-Signature"], received.body)
    assert event["type"] == "generation.succeeded"
    assert event["id"] == delivery.event_id == received.headers["Pixelhouse-Event-Id"]
    assert event["data"]["id"] == str(generation.pk)
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["image_url"] == f"/generations/{generation.pk}/image"
    with pytest.raises(ValueError, match="signature mismatch"):
        verify(webhook_secret, received.headers["Pixelhouse-Signature"], received.body + b" ")
    with pytest.raises(ValueError, match="signature mismatch"):
        verify(webhook_secret.upper(), received.headers["Pixelhouse-Signature"], received.body)
    # Quoted and held at submit: the 5e12 wei estimate at $3,000/ETH × 6/5.
    assert created["money"] == {
        "quoted_micros": "18000",
        "quoted": "$0.02",
        "held_micros": "18000",
        "held": "$0.02",
        "hold_status": "open",
        "charged_micros": None,
        "charged": None,
        "refunded_micros": None,
        "refunded": None,
    }
    assert created["cost"] == {"usd_micros": None, "wei": None}
    # Charged at payment time: the runner's fee 4,768,371,000,000 wei at $3,000/ETH is
    # 14,305.113 µ$, × 6/5 = 17,166.1356, rounded up: 17,167 µ$. Known before metering.
    assert event["data"]["money"] == {
        "quoted_micros": "18000",
        "quoted": "$0.02",
        "held_micros": "0",
        "held": "$0.00",
        "hold_status": "settled",
        "charged_micros": "17167",
        "charged": "$0.02",
        "refunded_micros": None,
        "refunded": None,
    }
    assert event["data"]["network"] == {
        "fee_wei": "4768371000000",
        "max_fee_wei": "5000000000000",
        "eth_usd_rate": "3000",
    }
    assert event["data"]["cost"] == {"usd_micros": "17167", "wei": "4768371000000"}
    assert generation.expected_fee_wei == 4_768_371_000_000
    fetched = Client().get(
        f"/api/v1/generations/{generation.pk}", HTTP_AUTHORIZATION=f"Bearer {api_key}"
    )
    assert fetched.json()["money"] == event["data"]["money"]
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.subject_id) == (
        1,
        200,
        str(generation.pk),
    )


def test_no_delivery_to_a_private_address_with_the_guard_on(
    live_server: Any, sandbox: SandboxControl
) -> None:
    with webhook_receiver() as receiver:
        _, api_key, _ = _page_secrets(live_server, receiver.url)  # saved with the guard off
        production = {"TEST_LIVEPEER_ALLOW_PRIVATE_ADDRESSES": "false"}
        with running_worker(name="webhooks-production", env=production):
            with submit(live_server.url, api_key, "guarded-0001", timeout=30) as answer:
                assert answer.status == 201
            # The worker refuses the loopback runner too: the image fails, and its
            # generation.failed event is refused before anything is sent.
            wait_for(
                lambda: WebhookDelivery.objects.filter(
                    status=WebhookDeliveryStatus.FAILED
                ).exists(),
                timeout=90,
            )
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "generation.failed"
    assert (delivery.attempts, delivery.response_status) == (1, None)
    assert "non-public address 127.0.0.1" in delivery.last_error
    assert Generation.objects.get().status == GenerationStatus.FAILED
