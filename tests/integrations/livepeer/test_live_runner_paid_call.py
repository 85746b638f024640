"""The paid call, queue receipts and the image, against the strict sandbox orchestrator.

The sandbox orchestrator processes the payment before the app runs, as go-livepeer
does: a processed payment sent again is refused (400). So the client re-sends only
after failures before payment processing, and never buys a second ticket.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from integrations.livepeer import (
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    SignerCredentials,
)
from integrations.livepeer.imageformat import image_dimensions
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    PAYMENT_PATH,
    RUNNER_1,
    RUNNER_1_ID,
    RUNNER_2,
    RecordingGuard,
    calls,
    calls_under,
    generate,
    generate_error,
    set_runner,
    set_runners,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


def pass_through_once(sandbox: SandboxControl, path: str) -> None:
    """Let the next matching request through untouched (a delay-only fault, consumed)."""
    sandbox.add_fault("POST", path, delay=0.001, times=1)


def assert_one_ticket(sandbox: SandboxControl, guard: RecordingGuard) -> None:
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert len(sandbox.events()) == 1


# --- re-sending the same payment --------------------------------------------------------


def test_capacity_503_before_payment_processing_resends_the_same_payment(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    pass_through_once(sandbox, RUNNER_1)  # the unpaid challenge
    sandbox.add_fault(
        "POST", RUNNER_1, status=503, body="no capacity available for runner", times=1
    )

    _, result = generate(signer_credentials, guard)

    assert png_size(result.images[0].content) == (640, 384)
    assert result.tickets_paid == 1
    assert_one_ticket(sandbox, guard)
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 503, 200]
    assert calls(sandbox, RUNNER_2) == []


def test_runner_without_capacity_fails_after_three_sends_of_one_payment(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runners(sandbox, capacity=0)  # both: a full runner is otherwise tried last

    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert error.retryable is False
    assert "after 3 attempts with the same payment" in str(error)
    assert_one_ticket(sandbox, guard)
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 503, 503, 503]
    assert calls(sandbox, RUNNER_2) == []


def test_connection_dropped_after_the_payment_was_processed_is_never_resent(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "drop", "times": 1})

    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert "paid; not re-sending" in str(error)
    assert_one_ticket(sandbox, guard)
    # One unpaid challenge and ONE paid send: the consumed payment is not sent again.
    assert len(calls(sandbox, RUNNER_1)) == 2
    assert calls(sandbox, RUNNER_2) == []


def test_paid_call_read_timeout_never_buys_a_second_ticket(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_READ_TIMEOUT = 0.3
    sandbox.set_config(runnerLatencySeconds=1.0)

    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert "timed out" in str(error)
    assert_one_ticket(sandbox, guard)
    assert len(calls(sandbox, RUNNER_1)) == 2
    assert calls(sandbox, RUNNER_2) == []


def test_a_redirect_on_the_paid_call_is_a_protocol_error_and_not_followed(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(
        sandbox,
        RUNNER_1_ID,
        appFault={"kind": "redirect", "status": 307, "location": "http://elsewhere.example/pay"},
    )

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert f"{sandbox.url}{RUNNER_1}: HTTP 307 redirect to /pay" in str(error)
    assert_one_ticket(sandbox, guard)
    assert len(calls(sandbox, RUNNER_1)) == 2


# --- untrusted answers ------------------------------------------------------------------


def test_oversized_result_body_is_refused_while_streaming(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_MAX_RESPONSE_BYTES = 50_000
    settings.LIVEPEER_MAX_IMAGE_BYTES = 300_000  # cap on the result: 50,000 + 400,000 + 4
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "oversized", "bytes": 5_000_000})

    started = time.monotonic()
    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert time.monotonic() - started < 10
    assert "body exceeds 450004 bytes" in str(error)
    assert_one_ticket(sandbox, guard)


def test_image_of_the_wrong_size_is_refused(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "wrong-size"})

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "is 648x392, not the requested 640x384" in str(error)
    assert_one_ticket(sandbox, guard)


def test_jpeg_is_kept_as_jpeg(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "jpeg"})

    _, result = generate(signer_credentials, guard)

    image = result.images[0]
    assert image.content_type == "image/jpeg"
    assert image.content.startswith(b"\xff\xd8\xff")
    assert image_dimensions(image.content) == (640, 384)
    assert_one_ticket(sandbox, guard)


def test_image_url_on_a_metadata_address_is_never_fetched(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "image-url", "host": "169.254.169.254"})

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "169.254.169.254" in str(error)
    assert "metadata" in str(error)
    assert_one_ticket(sandbox, guard)


# --- queue mode -------------------------------------------------------------------------


def test_queue_receipt_is_polled_to_completion(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_QUEUE_POLL_INTERVAL = 0.05
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=0.3)

    _, result = generate(signer_credentials, guard, width=512, height=512, seed=99)

    assert png_size(result.images[0].content) == (512, 512)
    assert result.images[0].seed == 99
    receipt_id = result.upstream_request_id or ""
    assert re.fullmatch(r"[0-9a-f]+", receipt_id)
    gets = [
        r for r in calls_under(sandbox, "/") if r["method"] == "GET" and receipt_id in r["path"]
    ]
    assert len(gets) >= 2
    assert {r["status"] for r in gets} == {200}
    assert_one_ticket(sandbox, guard)


def test_queue_that_never_completes_fails_terminally_after_the_timeout(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_QUEUE_POLL_INTERVAL = 0.05
    settings.LIVEPEER_QUEUE_TIMEOUT = 0.4
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=30)

    started = time.monotonic()
    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert time.monotonic() - started < 5
    assert "not completed within 0.4 s" in str(error)
    assert_one_ticket(sandbox, guard)


def test_all_runners_priced_in_seconds_still_pay_once_in_queue_mode(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_QUEUE_POLL_INTERVAL = 0.05
    set_runners(sandbox, unit="seconds", price="7")
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=0.1)

    _, result = generate(signer_credentials, guard)

    assert guard.records[0].expected_fee_wei == 70
    assert [e["feeWei"] for e in sandbox.events()] == ["70"]
    assert png_size(result.images[0].content) == (640, 384)
