"""Step 5 (some apps): poll a fal-style queue receipt to its result.

An app may answer the paid call with ``{"status":"IN_QUEUE", request_id, status_url,
response_url}`` instead of images. Polling and fetching the result are GETs: they
spend nothing, so transient failures are retried; a failed or never-completing job
is a paid failure (never a second payment). Poll URLs must be on the runner's own
origin or https, and are refused on non-public addresses (``addresses.py``).
"""

from __future__ import annotations

import time
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from pydantic import BaseModel, ValidationError

from integrations.livepeer.addresses import check_url
from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerError,
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    describe,
    response_message,
)
from integrations.livepeer.live_runner.runner_calls import pause_before_retry
from integrations.livepeer.live_runner.selection import Runner
from integrations.livepeer.schemas import QueueReceipt, QueueStatus
from integrations.livepeer.session import LivepeerSession, send, transport_failure, url_path
from integrations.livepeer.signer import parse_json

QUEUED_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS", "QUEUED"})
FAILED_STATES = frozenset({"FAILED", "ERROR", "CANCELLED", "CANCELED"})
COMPLETED = "COMPLETED"
#: Statuses of a GET worth asking again (a GET spends nothing).
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: GETs of queue results (free) on transient failures.
RESULT_FETCH_ATTEMPTS = 3

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_model(model: type[ModelT], payload: object, *, what: str, request_id: str) -> ModelT:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise LivepeerProtocolError(
            f"livepeer {what}: unexpected body ({exc.error_count()} errors)",
            request_id=request_id,
        ) from exc


class QueuePoller:
    """Polls one receipt from one runner."""

    def __init__(
        self, *, http: LivepeerSession, config: LivepeerConfig, runner: Runner, request_id: str
    ) -> None:
        self.http = http
        self.config = config
        self.runner = runner
        self.request_id = request_id

    def result(self, receipt: QueueReceipt) -> tuple[Any, str]:
        """Poll ``receipt`` to completion: ``(result payload, its URL)``."""
        status_url = self._poll_url(receipt.status_url)
        response_url = self._poll_url(receipt.response_url)
        label = receipt.request_id or "unknown"
        state = receipt.status.upper()
        if state in FAILED_STATES:
            raise LivepeerPaidCallFailedError(
                f"livepeer queued job {label} {state.lower()} (paid; not paying again)",
                request_id=self.request_id,
            )
        if state != COMPLETED:
            if status_url is None:
                raise LivepeerProtocolError(
                    f"livepeer queue receipt {label} has no status_url", request_id=self.request_id
                )
            completed = self._poll_status(status_url, label)
            response_url = self._poll_url(completed.response_url) or response_url
        if response_url is None and status_url is not None:
            response_url = status_url.rstrip("/").removesuffix("/status")
        if response_url is None:
            raise LivepeerProtocolError(
                f"livepeer queue receipt {label} has no response_url", request_id=self.request_id
            )
        return self._get_json(response_url, step="queue-result"), response_url

    def _poll_url(self, url: str | None) -> str | None:
        """``url`` resolved against the runner; only the runner's origin or https."""
        if not url:
            return None
        absolute = urljoin(self.runner.url, url)
        parts, origin = urlsplit(absolute), urlsplit(self.runner.url)
        same_origin = (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc)
        if not same_origin and parts.scheme != "https":
            raise LivepeerProtocolError(
                f"livepeer queue URL {url_path(absolute)} is neither on the runner nor https",
                request_id=self.request_id,
            )
        check_url(
            absolute,
            allow_private=self.config.allow_private_addresses,
            what="queue",
            request_id=self.request_id,
        )
        return absolute

    def _poll_status(self, status_url: str, label: str) -> QueueStatus:
        deadline = time.monotonic() + self.config.queue_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LivepeerPaidCallFailedError(
                    f"livepeer queued job {label} not completed within"
                    f" {self.config.queue_timeout:g} s (paid; not paying again)",
                    request_id=self.request_id,
                )
            status = self._poll_once(status_url, min(self.config.signer_read_timeout, remaining))
            if status is not None:
                state = status.status.upper()
                if state == COMPLETED:
                    if status.error:
                        raise LivepeerPaidCallFailedError(
                            f"livepeer queued job {label} completed with an error",
                            request_id=self.request_id,
                        )
                    return status
                if state in FAILED_STATES:
                    raise LivepeerPaidCallFailedError(
                        f"livepeer queued job {label} {state.lower()} (paid; not paying again)",
                        request_id=self.request_id,
                    )
                if state not in QUEUED_STATES:
                    raise LivepeerProtocolError(
                        f"livepeer queued job {label}: unknown status {state[:40]!r}",
                        request_id=self.request_id,
                    )
            time.sleep(max(0.0, min(self.config.queue_poll_interval, deadline - time.monotonic())))

    def _poll_once(self, status_url: str, read_timeout: float) -> QueueStatus | None:
        """One status poll; ``None`` when it failed transiently (try again later)."""
        try:
            response = send(
                self.http,
                "GET",
                status_url,
                step="queue-status",
                request_id=self.request_id,
                timeout=(self.config.connect_timeout, read_timeout),
                max_body=self.config.max_response_bytes,
            )
        except requests.RequestException:
            return None
        if response.status_code in TRANSIENT_STATUSES:
            return None
        if response.status_code != 200:
            raise self._paid_failure(response, "GET", status_url)
        return parse_model(
            QueueStatus,
            parse_json(response, what="queue status", request_id=self.request_id),
            what="queue status",
            request_id=self.request_id,
        )

    def _get_json(self, url: str, *, step: str) -> Any:
        """GET a JSON result, retrying transient failures (a GET spends nothing)."""
        last_problem = "no attempt made"
        for attempt in range(1, RESULT_FETCH_ATTEMPTS + 1):
            try:
                response = send(
                    self.http,
                    "GET",
                    url,
                    step=step,
                    request_id=self.request_id,
                    timeout=self.config.inference_timeout,
                    max_body=self.config.max_result_bytes,
                )
            except requests.RequestException as exc:
                last_problem = transport_failure(exc)
                pause_before_retry(attempt, RESULT_FETCH_ATTEMPTS, None)
                continue
            if response.status_code in TRANSIENT_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                pause_before_retry(attempt, RESULT_FETCH_ATTEMPTS, None)
                continue
            if response.status_code != 200:
                raise self._paid_failure(response, "GET", url)
            return parse_json(response, what=step, request_id=self.request_id)
        raise LivepeerPaidCallFailedError(
            f"livepeer runner GET {url_path(url)}: {last_problem}"
            f" after {RESULT_FETCH_ATTEMPTS} attempts (paid; not paying again)",
            request_id=self.request_id,
        )

    def _paid_failure(self, response: requests.Response, method: str, url: str) -> LivepeerError:
        _code, message = response_message(response)
        return LivepeerPaidCallFailedError(
            describe(
                upstream="runner",
                method=method,
                path=url_path(url),
                status=response.status_code,
                message=message,
            )
            + " (paid; not paying again)",
            status=response.status_code,
            request_id=self.request_id,
        )
