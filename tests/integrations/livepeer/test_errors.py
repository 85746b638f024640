"""Error-envelope parsing and the retryable flags of the error tree (pure functions)."""

from __future__ import annotations

import pytest

from integrations.livepeer import errors
from integrations.livepeer.errors import envelope_message, parse_retry_after


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": {"message": "Service Unavailable Error"}}, (None, "Service Unavailable Error")),
        ({"error": {"message": ": Prompt must be provided."}}, (None, "Prompt must be provided.")),
        ({"error": {"message": "x", "code": "E1"}}, ("E1", "x")),
        ({"error": "insufficient balance"}, (None, "insufficient balance")),
        ({"detail": {"msg": "Invalid bearer token."}}, (None, "Invalid bearer token.")),
        (
            {"detail": [{"loc": ["body", "width"], "msg": "must be int", "type": "int"}, "x"]},
            (None, "body.width: must be int; x"),
        ),
        ({"detail": "Not Found"}, (None, "Not Found")),
        (
            {"errors": ["Too many AI requests", {"message": "slow down"}]},
            (None, "Too many AI requests; slow down"),
        ),
        ({"message": "plain"}, (None, "plain")),
        ({}, (None, None)),
        ([], (None, None)),
        (None, (None, None)),
        ({"error": {"message": "bad\x00\nthing"}}, (None, "bad  thing")),
    ],
)
def test_envelopes(body: object, expected: tuple[str | None, str | None]) -> None:
    assert envelope_message(body) == expected


def test_long_messages_are_truncated() -> None:
    _, message = envelope_message({"error": {"message": "x" * 1000}})
    assert message == "x" * 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("soon", None),
        (None, None),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retryable_flags() -> None:
    retryable = {
        name
        for name in dir(errors)
        if name.startswith("Livepeer")
        and name.endswith("Error")
        and getattr(errors, name).retryable
    }
    assert retryable == {"LivepeerUnavailableError", "LivepeerRateLimitedError"}
    assert errors.LivepeerError.retryable is False


def test_repr_shows_only_safe_fields() -> None:
    error = errors.LivepeerRateLimitedError(
        "livepeer gateway POST /text-to-image: HTTP 429",
        status=429,
        retry_after=7.0,
        request_id="g1",
    )
    assert repr(error) == (
        "LivepeerRateLimitedError('livepeer gateway POST /text-to-image: HTTP 429',"
        " status=429, retry_after=7.0, request_id='g1')"
    )
