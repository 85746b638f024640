"""Domain errors of the accounts app, each with a stable machine code."""

from __future__ import annotations


class ApiKeyError(Exception):
    code = "api_key_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiKeyInvalidError(ApiKeyError):
    """A create request the service refuses (``field_errors``: field name → message)."""

    code = "invalid_input"

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__("Please correct the highlighted fields.")
        self.field_errors = field_errors


class ApiKeyRateLimitedError(ApiKeyError):
    """The key made more requests than ``API_KEY_RATE_LIMIT_COUNT`` in this window (429)."""

    code = "rate_limited"

    def __init__(self, *, retry_after: int) -> None:
        super().__init__("This API key made too many requests. Please wait a moment.")
        self.retry_after = retry_after


class WebhookEndpointInvalidError(Exception):
    """A webhook URL the service refuses (``field_errors``: field name → message)."""

    code = "invalid_input"

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__("Please correct the highlighted fields.")
        self.message = "Please correct the highlighted fields."
        self.field_errors = field_errors
