"""The live-runner backend over real HTTP against the sandbox signer and runners.

Every test asserts the guard's call sequence, the number of usage events (one per
ticket the sandbox signer issued) and how often each upstream was called, so a
second payment anywhere would show up.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from integrations.livepeer import (
    LivepeerAuthError,
    LivepeerBadRequestError,
    LivepeerError,
    LivepeerInsufficientBalanceError,
    LivepeerModelUnavailableError,
    LivepeerOutcomeUnknownError,
    LivepeerPaidCallFailedError,
    LivepeerPriceExceededError,
    LivepeerProtocolError,
    LivepeerUnavailableError,
    SignerCredentials,
    get_backend,
)
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    DISCOVERY_PATH,
    MODEL,
    PAYMENT_PATH,
    RUNNER_1,
    RUNNER_2,
    SIGNER_INFO_PATH,
    RecordingGuard,
    calls,
    image_request,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


def generate(credentials: SignerCredentials, guard: RecordingGuard, **overrides: Any) -> Any:
    request = image_request(**overrides)
    return request, get_backend("live-runner").generate(
        request, credentials=credentials, guard=guard
    )


def generate_error(
    credentials: SignerCredentials, guard: RecordingGuard, error: type[Exception], **overrides: Any
) -> Any:
    request = image_request(**overrides)
    with pytest.raises(error) as excinfo:
        get_backend("live-runner").generate(request, credentials=credentials, guard=guard)
    return request, excinfo.value


def pass_through_once(sandbox: SandboxControl, path: str) -> None:
    """Let the next matching request through untouched (a delay-only fault, consumed)."""
    sandbox.add_fault("POST", path, delay=0.001, times=1)


# --- happy path ------------------------------------------------------------------------


def test_happy_path_pays_once_and_returns_the_requested_png(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    request, result = generate(signer_credentials, guard, width=640, height=384, seed=1234)

    assert len(result.images) == 1
    image = result.images[0]
    assert image.content_type == "image/png"
    assert png_size(image.content) == (640, 384)
    assert image.dimensions == (640, 384)
    assert image.seed == 1234
    assert image.nsfw is False
    assert result.runner_url == f"{sandbox.url}{RUNNER_1}"
    assert re.fullmatch(r"[0-9a-f]{16}", result.manifest_id or "")
    assert result.upstream_request_id is None
    assert result.tickets_paid == 1

    assert guard.calls == ["claim", "confirm"]
    assert guard.confirmed == [(result.manifest_id, result.runner_url)]
    events = sandbox.events()
    assert len(events) == 1
    assert events[0]["gatewayRequestId"] == request.request_id
    assert events[0]["manifestId"] == result.manifest_id
    assert events[0]["modelId"] == MODEL
    assert events[0]["pixels"] == 640 * 384
    assert events[0]["pipeline"] == "text-to-image"

    assert len(calls(sandbox, DISCOVERY_PATH, "GET")) == 1
    assert len(calls(sandbox, SIGNER_INFO_PATH)) == 1
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    runner_calls = calls(sandbox, RUNNER_1)
    assert [r["status"] for r in runner_calls] == [402, 200]
    # The signer JWT goes to the signer only, never to a runner.
    assert {r["auth"] for r in runner_calls} == {None}
    assert calls(sandbox, RUNNER_2) == []


def test_payer_address_is_cached_between_generations(
    sandbox: SandboxControl, signer_credentials: SignerCredentials
) -> None:
    generate(signer_credentials, RecordingGuard())
    generate(signer_credentials, RecordingGuard())

    assert len(calls(sandbox, SIGNER_INFO_PATH)) == 1
    assert len(calls(sandbox, PAYMENT_PATH)) == 2
    assert len(sandbox.events()) == 2


def test_no_secret_reaches_logs_reprs_or_errors(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = signer_credentials.access_token
    raw = token if isinstance(token, str) else token.reveal()
    request, result = generate(signer_credentials, guard)
    sandbox.add_fault("POST", PAYMENT_PATH, status=401, body={"error": {"message": "expired"}})
    _, error = generate_error(signer_credentials, RecordingGuard(), LivepeerAuthError)

    assert raw not in caplog.text
    assert "Bearer" not in caplog.text
    assert raw not in repr(signer_credentials)
    assert raw not in repr(result)
    assert raw not in str(error)
    assert raw not in repr(error)
    assert request.request_id in caplog.text


# --- choosing a runner ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "body": {"detail": {"msg": "busy"}}},
        {"status": 500},
        {"drop": True},
    ],
    ids=["503", "500", "dropped"],
)
def test_failed_challenge_on_first_runner_fails_over_to_second(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    fault: dict[str, Any],
) -> None:
    sandbox.add_fault("POST", RUNNER_1, times=1, **fault)

    request, result = generate(signer_credentials, guard)

    assert result.runner_url == f"{sandbox.url}{RUNNER_2}"
    assert png_size(result.images[0].content) == (640, 384)
    assert guard.calls == ["claim", "confirm"]
    events = sandbox.events()
    assert [e["gatewayRequestId"] for e in events] == [request.request_id]
    assert len(calls(sandbox, RUNNER_1)) == 1
    assert [r["status"] for r in calls(sandbox, RUNNER_2)] == [402, 200]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1


def test_every_runner_failing_before_payment_is_retryable_and_spends_nothing(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", "/runner/*", status=503)

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.retryable is True
    assert "all 2 runners failed before payment" in str(error)
    assert guard.calls == []
    assert sandbox.events() == []
    assert calls(sandbox, PAYMENT_PATH) == []


def test_model_nobody_serves_is_terminal_and_never_pays(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    _, error = generate_error(
        signer_credentials, guard, LivepeerModelUnavailableError, model_id="acme/NoSuchModel"
    )

    assert error.retryable is False
    assert "image-generation/acme/NoSuchModel" in str(error)
    assert guard.calls == []
    assert sandbox.events() == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert calls(sandbox, SIGNER_INFO_PATH) == []
    assert [r["path"] for r in sandbox.requests()] == [DISCOVERY_PATH]


def test_empty_discovery_is_retryable(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("GET", DISCOVERY_PATH, status=200, body=[])

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert "no orchestrators" in str(error)
    assert guard.calls == []
    assert calls(sandbox, PAYMENT_PATH) == []


def test_discovery_503_is_retryable_with_retry_after(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "GET",
        DISCOVERY_PATH,
        status=503,
        body={"error": {"message": "Service Unavailable Error"}},
        headers={"Retry-After": "4"},
    )

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.status == 503
    assert error.retry_after == 4.0
    assert "Service Unavailable Error" in str(error)
    assert guard.calls == []


def test_garbage_token_is_refused_before_anything_is_claimed(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    garbage = SignerCredentials(
        signer_url=signer_credentials.signer_url,
        discovery_url=signer_credentials.discovery_url,
        access_token="not-a-jwt",
    )

    _, error = generate_error(garbage, guard, LivepeerAuthError)

    assert error.status == 401
    assert error.retryable is False
    assert guard.calls == []
    assert sandbox.events() == []
    assert calls(sandbox, PAYMENT_PATH) == []


def test_runner_rejecting_the_request_is_terminal_before_payment(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    _, error = generate_error(signer_credentials, guard, LivepeerBadRequestError, width=100)

    assert error.status == 400
    assert "have to be divisible by 8" in str(error)
    assert guard.calls == []
    assert sandbox.events() == []
    assert len(calls(sandbox, RUNNER_1)) == 1
    assert calls(sandbox, RUNNER_2) == []


def test_runner_422_detail_list_is_a_bad_request(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST",
        RUNNER_1,
        status=422,
        body={"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]},
    )

    _, error = generate_error(signer_credentials, guard, LivepeerBadRequestError)

    assert error.status == 422
    assert "body.prompt: field required" in str(error)
    assert guard.calls == []
    assert sandbox.events() == []


# --- the signer's answers -------------------------------------------------------------


def test_refresh_480_once_then_success_pays_once(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST",
        PAYMENT_PATH,
        status=480,
        body={"error": {"message": "refresh session"}},
        headers={"Livepeer-Orchestrator-URL": f"{sandbox.url}/runner/bytedance-sdxl-lightning-1"},
        times=1,
    )

    request, result = generate(signer_credentials, guard)

    assert guard.calls == ["claim", "release", "claim", "confirm"]
    assert result.tickets_paid == 1
    assert png_size(result.images[0].content) == (640, 384)
    assert [r["status"] for r in calls(sandbox, PAYMENT_PATH)] == [480, 200]
    # Fresh params came from {payment_url}/refresh-payment, not from a new challenge.
    refresh = "/runner/bytedance-sdxl-lightning-1/payment/refresh-payment"
    assert [r["status"] for r in calls(sandbox, refresh)] == [200]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 200]
    events = sandbox.events()
    assert [e["gatewayRequestId"] for e in events] == [request.request_id]
    assert events[0]["manifestId"] == result.manifest_id
    assert guard.confirmed == [(result.manifest_id, result.runner_url)]


def test_refresh_480_three_times_gives_up_retryably_without_paying(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=480, body={"error": {"message": "refresh"}})

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.retryable is True
    assert error.status == 480
    assert guard.calls == ["claim", "release"] * 3
    assert len(calls(sandbox, PAYMENT_PATH)) == 3
    refresh = "/runner/bytedance-sdxl-lightning-1/payment/refresh-payment"
    assert len(calls(sandbox, refresh)) == 2
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, RUNNER_1)].count(200) == 0


@pytest.mark.parametrize(
    ("status", "error_class", "message"),
    [
        (481, LivepeerPriceExceededError, "price exceeds"),
        (401, LivepeerAuthError, "token expired"),
        (403, LivepeerAuthError, "forbidden"),
        (400, LivepeerBadRequestError, "numTickets 200 exceeds maximum of 100"),
    ],
)
def test_terminal_signer_answers_release_the_claim(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    status: int,
    error_class: type[LivepeerError],
    message: str,
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=status, body={"error": {"message": message}})

    _, error = generate_error(signer_credentials, guard, error_class)

    assert type(error) is error_class
    assert error.status == status
    assert error.retryable is False
    assert message in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


def test_insufficient_balance_483_is_terminal(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    external_user_id: str,
) -> None:
    sandbox.set_balance(external_user_id, 0)

    _, error = generate_error(signer_credentials, guard, LivepeerInsufficientBalanceError)

    assert error.status == 483
    assert error.retryable is False
    assert "insufficient balance" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, PAYMENT_PATH)] == [483]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


def test_signer_503_is_retryable_and_honours_retry_after(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST",
        PAYMENT_PATH,
        status=503,
        body={"error": {"message": "Service Unavailable Error"}},
        headers={"Retry-After": "7"},
    )

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.retryable is True
    assert error.status == 503
    assert error.retry_after == 7.0
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []


def test_no_tickets_needed_482_never_pays_and_does_not_loop(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=482, body={"error": {"message": "no tickets"}})

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "482" in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    # Challenge, then one call without a payment (the sandbox runner still wants one).
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 402]


def test_signer_timeout_after_sending_is_outcome_unknown_and_keeps_the_claim(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_SIGNER_READ_TIMEOUT = 0.5
    sandbox.add_fault("POST", PAYMENT_PATH, delay=1.5, times=1)

    _, error = generate_error(signer_credentials, guard, LivepeerOutcomeUnknownError)

    assert error.retryable is False
    assert "a ticket may have been issued" in str(error)
    assert guard.calls == ["claim"]
    # The runner was never called with a payment, and no second ticket was asked for.
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1


def test_signer_dropping_the_connection_is_outcome_unknown(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, drop=True, times=1)

    _, error = generate_error(signer_credentials, guard, LivepeerOutcomeUnknownError)

    assert guard.calls == ["claim"]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


def test_refresh_endpoint_failing_falls_back_to_a_new_challenge(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=480, times=1)
    sandbox.add_fault("POST", "/runner/bytedance-sdxl-lightning-1/payment/*", status=404)

    request, result = generate(signer_credentials, guard)

    assert guard.calls == ["claim", "release", "claim", "confirm"]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 402, 200]
    assert [e["gatewayRequestId"] for e in sandbox.events()] == [request.request_id]
    assert sandbox.events()[0]["manifestId"] == result.manifest_id


def test_signer_504_from_a_proxy_is_outcome_unknown(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=504, body="upstream timed out")

    _, error = generate_error(signer_credentials, guard, LivepeerOutcomeUnknownError)

    assert error.status == 504
    assert guard.calls == ["claim"]


def test_signer_200_without_a_usable_payment_is_confirmed_and_never_retried(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=200, body={"payment": "", "segCreds": "x"})

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "without a usable payment" in str(error)
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


def test_guard_refusing_the_claim_sends_nothing(
    sandbox: SandboxControl, signer_credentials: SignerCredentials
) -> None:
    class AlreadyPaid(Exception):
        pass

    class RefusingGuard(RecordingGuard):
        def claim(self, *, manifest_id: str | None, runner_url: str | None) -> None:
            super().claim(manifest_id=manifest_id, runner_url=runner_url)
            raise AlreadyPaid

    guard = RefusingGuard()
    with pytest.raises(AlreadyPaid):
        get_backend("live-runner").generate(
            image_request(), credentials=signer_credentials, guard=guard
        )

    assert guard.calls == ["claim"]
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []


# --- the paid call --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [{"status": 503}, {"drop": True}, {"status": 502}], ids=["503", "dropped", "502"]
)
def test_paid_call_failing_once_resends_the_same_payment(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    fault: dict[str, Any],
) -> None:
    pass_through_once(sandbox, RUNNER_1)  # the unpaid challenge
    sandbox.add_fault("POST", RUNNER_1, times=1, **fault)  # the first paid attempt

    request, result = generate(signer_credentials, guard)

    assert png_size(result.images[0].content) == (640, 384)
    assert result.runner_url == f"{sandbox.url}{RUNNER_1}"
    assert result.tickets_paid == 1
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert [e["gatewayRequestId"] for e in sandbox.events()] == [request.request_id]
    statuses = [r["status"] for r in calls(sandbox, RUNNER_1)]
    assert len(statuses) == 3
    assert statuses[0] == 402
    assert statuses[2] == 200
    assert calls(sandbox, RUNNER_2) == []


def test_paid_call_failing_three_times_fails_terminally_without_paying_again(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    pass_through_once(sandbox, RUNNER_1)
    sandbox.add_fault("POST", RUNNER_1, status=503, body={"detail": {"msg": "CUDA error"}})

    request, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert error.retryable is False
    assert "after 3 attempts" in str(error)
    assert "CUDA error" in str(error)
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert [e["gatewayRequestId"] for e in sandbox.events()] == [request.request_id]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 503, 503, 503]
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

    assert error.retryable is False
    assert "not paying again" in str(error)
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert len(sandbox.events()) == 1
    assert calls(sandbox, RUNNER_2) == []


def test_runner_refusing_the_payment_is_terminal(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    pass_through_once(sandbox, RUNNER_1)
    sandbox.add_fault("POST", RUNNER_1, status=402, body={"detail": {"msg": "bad ticket"}})

    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert error.status == 402
    assert "not paying again" in str(error)
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert len(sandbox.events()) == 1


# --- queue mode -----------------------------------------------------------------------


def test_queue_receipt_is_polled_to_completion(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_QUEUE_POLL_INTERVAL = 0.05
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=0.3)

    request, result = generate(signer_credentials, guard, width=512, height=512, seed=99)

    assert png_size(result.images[0].content) == (512, 512)
    assert result.images[0].seed == 99
    receipt_id = result.upstream_request_id or ""
    assert re.fullmatch(r"[0-9a-f]{24}", receipt_id)
    base = f"/runner/bytedance-sdxl-lightning-1/requests/{receipt_id}"
    polls = calls(sandbox, f"{base}/status", "GET")
    assert len(polls) >= 2
    assert [r["status"] for r in polls] == [200] * len(polls)
    assert len(calls(sandbox, base, "GET")) == 1
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert [e["gatewayRequestId"] for e in sandbox.events()] == [request.request_id]


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
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert len(sandbox.events()) == 1


def test_failed_queue_job_is_terminal(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_QUEUE_POLL_INTERVAL = 0.05
    sandbox.set_config(runnerMode="queue", runnerLatencySeconds=30)
    sandbox.add_fault(
        "GET",
        "/runner/bytedance-sdxl-lightning-1/requests/*",
        status=200,
        body={"status": "FAILED", "error": "OOM"},
    )

    started = time.monotonic()
    _, error = generate_error(signer_credentials, guard, LivepeerPaidCallFailedError)

    assert time.monotonic() - started < 5
    assert "failed" in str(error)
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
