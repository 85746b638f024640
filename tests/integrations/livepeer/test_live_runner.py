"""The live-runner backend over real HTTP against the strict sandbox: selection and payment.

Every test asserts the guard's call sequence, the usage events the sandbox signer
recorded (one per ticket) and how often each upstream was called, so a second
payment anywhere would show up.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from integrations.livepeer import (
    LivepeerAuthError,
    LivepeerBadRequestError,
    LivepeerError,
    LivepeerInsufficientBalanceError,
    LivepeerModelUnavailableError,
    LivepeerOutcomeUnknownError,
    LivepeerPriceExceededError,
    LivepeerProtocolError,
    LivepeerRateLimitedError,
    LivepeerUnavailableError,
    SignerCredentials,
    get_backend,
)
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    DEFAULT_PRICE_WEI,
    DISCOVERY_PATH,
    MODEL,
    PAYMENT_PATH,
    RUNNER_1,
    RUNNER_1_ID,
    RUNNER_2,
    SIGNER_INFO_PATH,
    RecordingGuard,
    calls,
    calls_under,
    generate,
    generate_error,
    image_request,
    set_runner,
    set_runners,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


# --- success and what it costs ---------------------------------------------------------


def test_fixed_price_pays_once_and_records_the_exact_fee(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    request, result = generate(signer_credentials, guard, width=640, height=384, seed=1234)

    image = result.images[0]
    assert len(result.images) == 1
    assert image.content_type == "image/png"
    assert png_size(image.content) == (640, 384)
    assert image.seed == 1234
    assert result.runner_url == f"{sandbox.url}{RUNNER_1}"
    assert re.fullmatch(r"[0-9a-f]+", result.manifest_id or "")
    assert result.tickets_paid == 1

    assert guard.calls == ["claim", "confirm"]
    [record] = guard.records
    assert record.manifest_id == result.manifest_id
    assert record.runner_url == result.runner_url
    assert record.price_wei == DEFAULT_PRICE_WEI == 4_768_371_000_000
    assert record.price_unit == "fixed"
    assert record.units_paid == 1
    assert record.expected_fee_wei == 4_768_371_000_000

    [event] = sandbox.events()
    assert event["manifestId"] == result.manifest_id
    assert event["feeWei"] == "4768371000000"
    assert event["pipeline"] == "fixed"
    # The collector's own id, never ours: nothing joins on it.
    assert event["gatewayRequestId"] != request.request_id

    assert len(calls(sandbox, DISCOVERY_PATH, "GET")) == 1
    assert len(calls(sandbox, SIGNER_INFO_PATH)) == 1
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    runner_calls = calls(sandbox, RUNNER_1)
    assert [r["status"] for r in runner_calls] == [402, 200]
    assert {r["auth"] for r in runner_calls} == {None}  # the signer JWT never goes to a runner
    # Discovery publishes ".../app"; the slashless URL (a 301 upstream) is never called.
    assert calls(sandbox, RUNNER_1.rstrip("/")) == []
    assert calls(sandbox, RUNNER_2) == []


def test_price_above_2_64_is_recorded_exactly(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    price = 2**64 + 4_768_371
    set_runners(sandbox, price=str(price))

    _, result = generate(signer_credentials, guard)

    [record] = guard.records
    assert record.price_wei == price == 18446744073714319987
    assert record.expected_fee_wei == price
    assert [e["feeWei"] for e in sandbox.events()] == [str(price)]
    assert result.tickets_paid == 1


def test_seconds_runner_pays_for_the_ten_seconds_a_first_payment_covers(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runners(sandbox, unit="seconds", price="1000000007")

    _, result = generate(signer_credentials, guard)

    [record] = guard.records
    assert record.price_unit == "seconds"
    assert record.price_wei == 1_000_000_007
    assert record.units_paid == 10
    assert record.expected_fee_wei == 10_000_000_070
    [event] = sandbox.events()
    assert event["feeWei"] == "10000000070"
    assert event["pipeline"] == "live"
    assert event["manifestId"] == result.manifest_id
    assert png_size(result.images[0].content) == (640, 384)


def test_runner_priced_in_live_video_units_is_refused_before_anything_is_paid(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runners(sandbox, unit="720p-pixel-seconds", price="3")

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "720p-pixel-seconds (live video)" in str(error)
    assert guard.calls == []
    assert calls_under(sandbox, "/apps/") == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []


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
    [{"status": 503, "body": {"detail": {"msg": "busy"}}}, {"status": 500}, {"drop": True}],
    ids=["503", "500", "dropped"],
)
def test_failed_challenge_on_first_runner_fails_over_to_second(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    fault: dict[str, Any],
) -> None:
    sandbox.add_fault("POST", RUNNER_1, times=1, **fault)

    _, result = generate(signer_credentials, guard)

    assert result.runner_url == f"{sandbox.url}{RUNNER_2}"
    assert png_size(result.images[0].content) == (640, 384)
    assert guard.calls == ["claim", "confirm"]
    assert [e["manifestId"] for e in sandbox.events()] == [result.manifest_id]
    assert len(calls(sandbox, RUNNER_1)) == 1
    assert [r["status"] for r in calls(sandbox, RUNNER_2)] == [402, 200]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1


def test_every_runner_failing_before_payment_is_retryable_and_spends_nothing(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", "/apps/*", status=503)

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.retryable is True
    assert "all 2 runners failed before payment" in str(error)
    assert guard.calls == []
    assert sandbox.events() == []
    assert calls(sandbox, PAYMENT_PATH) == []


def test_a_redirect_on_the_challenge_is_a_protocol_error_naming_the_url(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST", RUNNER_1, status=301, headers={"Location": "http://elsewhere.example/x"}
    )

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert f"{sandbox.url}{RUNNER_1}" in str(error)
    assert "HTTP 301 redirect to /x" in str(error)
    assert guard.calls == []
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
    assert [r["path"] for r in sandbox.requests()] == [DISCOVERY_PATH]


def test_empty_discovery_cache_503_is_retryable(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.set_config(discoveryEmpty=True)

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.status == 503
    assert error.retryable is True
    assert guard.calls == []
    assert calls(sandbox, PAYMENT_PATH) == []


def test_runner_url_on_a_private_address_is_refused_in_production_settings(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_ALLOW_PRIVATE_ADDRESSES = False

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "non-public address 127.0.0.1" in str(error)
    assert "LIVEPEER_ALLOW_PRIVATE_ADDRESSES" in str(error)
    assert error.retryable is False
    assert guard.calls == []
    assert calls_under(sandbox, "/apps/") == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []


def test_over_long_manifest_id_is_refused_before_the_claim(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runners(sandbox, manifestIdLength=202)

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError)

    assert "manifest_id (202 chars)" in str(error)
    assert "nothing was paid" in str(error)
    assert guard.calls == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


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
    assert guard.calls == []
    assert sandbox.events() == []
    assert calls(sandbox, PAYMENT_PATH) == []


# --- the signer's answers -------------------------------------------------------------


def test_refresh_480_fetches_a_fresh_challenge_and_pays_once(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "POST",
        PAYMENT_PATH,
        status=480,
        body={"error": {"message": "refresh session for remote signer"}},
        headers={"Livepeer-Orchestrator-URL": sandbox.url},
        times=1,
    )

    _, result = generate(signer_credentials, guard)

    assert guard.calls == ["claim", "release", "claim", "confirm"]
    assert result.tickets_paid == 1
    assert [r["status"] for r in calls(sandbox, PAYMENT_PATH)] == [480, 200]
    # A fresh unpaid challenge, never "{payment_url}/refresh-payment".
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 402, 200]
    assert [r for r in sandbox.requests() if "refresh-payment" in str(r["path"])] == []
    [event] = sandbox.events()
    assert event["manifestId"] == result.manifest_id
    assert guard.records[0].manifest_id == result.manifest_id


def test_refresh_480_three_times_gives_up_retryably_without_paying(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, status=480, body={"error": {"message": "refresh"}})

    _, error = generate_error(signer_credentials, guard, LivepeerUnavailableError)

    assert error.retryable is True
    assert error.status == 480
    assert guard.calls == ["claim", "release"] * 3
    assert len(calls(sandbox, PAYMENT_PATH)) == 3
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402, 402, 402]
    assert sandbox.events() == []


@pytest.mark.parametrize(
    ("status", "error_class", "message"),
    [
        (400, LivepeerBadRequestError, "numTickets 200 exceeds maximum of 100"),
        (401, LivepeerAuthError, "token expired"),
        (403, LivepeerAuthError, "forbidden"),
        (429, LivepeerRateLimitedError, "slow down"),
        (481, LivepeerPriceExceededError, "price exceeds"),
        (482, LivepeerProtocolError, "no tickets"),
        (503, LivepeerUnavailableError, "Service Unavailable Error"),
    ],
)
def test_answers_given_before_a_ticket_release_the_claim(
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
    assert message in str(error)
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


def test_insufficient_balance_483_releases_the_claim(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    external_user_id: str,
) -> None:
    sandbox.set_balance(external_user_id, 0)

    _, error = generate_error(signer_credentials, guard, LivepeerInsufficientBalanceError)

    assert error.status == 483
    assert error.retryable is False
    assert guard.calls == ["claim", "release"]
    assert sandbox.events() == []
    assert [r["status"] for r in calls(sandbox, PAYMENT_PATH)] == [483]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": {"error": {"message": "Internal Server Error"}}},
        {"status": 502, "body": {"error": {"message": "signer auth invalid maxPrice"}}},
        {"status": 504, "body": "upstream timed out"},
        {"drop": True},
    ],
    ids=["500", "502", "504", "dropped"],
)
def test_ambiguous_signer_failures_are_outcome_unknown_and_keep_the_claim(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    fault: dict[str, Any],
) -> None:
    sandbox.add_fault("POST", PAYMENT_PATH, times=1, **fault)

    _, error = generate_error(signer_credentials, guard, LivepeerOutcomeUnknownError)

    assert error.retryable is False
    assert "claim kept, not paying again" in str(error)
    assert guard.calls == ["claim"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    # The runner never saw a paid call, and no second ticket was asked for.
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]
    assert calls(sandbox, RUNNER_2) == []


def test_signer_timeout_after_sending_is_outcome_unknown(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_SIGNER_READ_TIMEOUT = 0.5
    sandbox.add_fault("POST", PAYMENT_PATH, delay=1.5, times=1)

    _, error = generate_error(signer_credentials, guard, LivepeerOutcomeUnknownError)

    assert "timed out" in str(error)
    assert guard.calls == ["claim"]
    assert [r["status"] for r in calls(sandbox, RUNNER_1)] == [402]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1


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


def test_runner_keeps_its_price_per_runner(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    set_runner(sandbox, RUNNER_1_ID, price="123456789")

    _, result = generate(signer_credentials, guard, model_id=MODEL)

    assert result.runner_url == f"{sandbox.url}{RUNNER_1}"
    assert guard.records[0].expected_fee_wei == 123_456_789
    assert [e["feeWei"] for e in sandbox.events()] == ["123456789"]


def test_runner_url_longer_than_the_column_is_refused_before_anything_is_claimed(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    flux = "black-forest-labs/FLUX.1-schnell"
    for index in (1, 2):
        sandbox._call("DELETE", f"/runners/black-forest-labs-flux-1-schnell-{index}")
    sandbox._call("POST", "/runners", {"id": "r" * 600, "model": flux})

    _, error = generate_error(signer_credentials, guard, LivepeerProtocolError, model_id=flux)

    assert "has a URL longer than 500 characters" in str(error)
    assert guard.calls == []
    assert calls_under(sandbox, "/apps/") == []
    assert calls(sandbox, PAYMENT_PATH) == []
    assert sandbox.events() == []
