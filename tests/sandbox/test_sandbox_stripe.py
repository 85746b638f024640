"""sandbox/stripe.py: localstripe on 127.0.0.1 only, delivering signed webhooks to the
endpoint given on its command line (as the Procfile's ``stripe:`` line runs it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from tests.sandbox_server import free_port
from tests.stripe_server import StripeProcess

SECRET = "whsec_launcher_test"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


def test_it_listens_on_loopback_only_and_signs_its_webhooks(receiver: Any) -> None:
    url, received = receiver
    process = StripeProcess(port=free_port(), webhook_url=url, webhook_secret=SECRET)
    process.start()
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("::1", process.port)) != 0  # not on IPv6 loopback
        client = stripe.StripeClient(
            "sk_test_launcher", base_addresses={"api": process.url}, max_network_retries=0
        )
        method = client.v1.payment_methods.create(
            params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                             "exp_year": 2030, "cvc": "123"}}
        )  # fmt: skip
        intent = client.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "payment_method": method.id,
                    "confirm": True}
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.stop()
    [(body, signature)] = received
    event = stripe.Webhook.construct_event(body, signature, SECRET)
    assert (event.type, event.data.object.id) == ("payment_intent.succeeded", intent.id)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, signature, "whsec_other")
