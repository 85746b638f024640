"""Steps 2 and 4: the unpaid challenge and the paid call to a runner's app.

Both are ``POST {app URL}`` with the same JSON body. Redirects are never followed
(a 3xx is a protocol error naming the URL: a POST does not survive one, and the
payment headers must not go elsewhere).

**Challenge** (no payment headers, ``Livepeer-Payer-Address`` set): go-livepeer answers
402 ``{payment_params, orchestrator, manifest_id, payment_url}`` (``server/ai_http.go``
``runnerChallenge``). The ``manifest_id`` is the per-call join key we store, so it is
validated and bounded here, before any payment is claimed. A runner that fails here
(5xx, timeout, dropped) has cost nothing: the caller tries the next one.

**Paid call** (``Livepeer-Payment`` + ``Livepeer-Segment``): the orchestrator reserves
a session and then **processes the payment before it proxies to the app**
(``reservePaidLiveRunnerSession``); a processed payment sent again is refused (400,
ticket nonce already seen). So the same payment is re-sent only after failures that
happen before payment processing: a capacity 503 (``ReserveSession``), or a
connection that was refused (nothing sent). Every other failure ends the call as
:class:`LivepeerPaidCallFailedError` with the one ticket already bought, never a
second one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from pydantic import ValidationError

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    describe,
    error_for_status,
    parse_retry_after,
    response_message,
)
from integrations.livepeer.live_runner.payment import Ticket
from integrations.livepeer.live_runner.selection import Runner
from integrations.livepeer.schemas import PaymentChallenge
from integrations.livepeer.session import (
    BodyTooLargeError,
    LivepeerSession,
    send,
    transport_failure,
    url_path,
    was_not_sent,
)
from integrations.livepeer.types import MAX_MANIFEST_ID_CHARS, ImageRequest, is_upstream_id

logger = logging.getLogger(__name__)

PAYER_ADDRESS_HEADER = "Livepeer-Payer-Address"
PAYMENT_HEADER = "Livepeer-Payment"
SEGMENT_HEADER = "Livepeer-Segment"

#: Extra sends of the same payment after a failure before payment processing.
PAID_CALL_RETRIES = 2
#: Paid-call statuses answered before the payment is processed (capacity).
BEFORE_PAYMENT_STATUSES = frozenset({503})
RETRY_BACKOFF_SECONDS = 0.25
MAX_RETRY_SLEEP_SECONDS = 5.0


def runner_payload(request: ImageRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "prompt": request.prompt,
        "size": f"{request.width}x{request.height}",
        "model_id": request.model_id,
    }
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.negative_prompt:
        payload["negative_prompt"] = request.negative_prompt
    return payload


def redirect_error(response: requests.Response, url: str, request_id: str) -> LivepeerProtocolError:
    location = url_path(response.headers.get("Location", "") or "")
    return LivepeerProtocolError(
        f"livepeer runner POST {url}: HTTP {response.status_code} redirect to {location}"
        " (a POST is never re-sent to a redirect; check the runner URL and its trailing slash)",
        status=response.status_code,
        request_id=request_id,
    )


def pause_before_retry(attempt: int, attempts: int, retry_after: float | None) -> None:
    if attempt >= attempts:
        return
    delay = retry_after if retry_after is not None else RETRY_BACKOFF_SECONDS * attempt
    time.sleep(min(delay, MAX_RETRY_SLEEP_SECONDS))


class RunnerCalls:
    """The two POSTs to a runner's app for one ``generate``."""

    def __init__(
        self,
        *,
        http: LivepeerSession,
        config: LivepeerConfig,
        request: ImageRequest,
        payer_address: str,
    ) -> None:
        self.http = http
        self.config = config
        self.request = request
        self.request_id = request.request_id
        self.payer_address = payer_address

    def challenge(self, runner: Runner, problems: list[str]) -> PaymentChallenge | None:
        """The runner's 402 challenge; ``None`` (and a note) if this runner failed."""
        try:
            response = send(
                self.http,
                "POST",
                runner.url,
                step="challenge",
                request_id=self.request_id,
                json=runner_payload(self.request),
                headers={PAYER_ADDRESS_HEADER: self.payer_address},
                timeout=self.config.signer_timeout,
                max_body=self.config.max_response_bytes,
            )
        except requests.RequestException as exc:
            problems.append(f"{url_path(runner.url)}: {transport_failure(exc)}")
            return None
        status = response.status_code
        if status == 402:
            return self._parse_challenge(runner, response)
        if 300 <= status < 400:
            raise redirect_error(response, runner.url, self.request_id)
        if status in (400, 422):
            raise error_for_status(
                response,
                upstream="runner",
                method="POST",
                path=url_path(runner.url),
                request_id=self.request_id,
            )
        _code, message = response_message(response)
        problems.append(
            f"{url_path(runner.url)}: HTTP {status}" + (f" - {message}" if message else "")
        )
        return None

    def _parse_challenge(self, runner: Runner, response: requests.Response) -> PaymentChallenge:
        path = url_path(runner.url)
        try:
            challenge = PaymentChallenge.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            # go-livepeer answers 402 {"error":…} without params when the payer
            # address is missing or invalid: a protocol problem on our side or theirs.
            _code, message = response_message(response)
            raise LivepeerProtocolError(
                f"livepeer runner POST {path}: HTTP 402 without a payment challenge"
                + (f" - {message}" if message else ""),
                status=402,
                request_id=self.request_id,
            ) from exc
        if not is_upstream_id(challenge.manifest_id, max_chars=MAX_MANIFEST_ID_CHARS):
            raise LivepeerProtocolError(
                f"livepeer runner POST {path}: the challenge's manifest_id"
                f" ({len(challenge.manifest_id)} chars) is not an identifier of at most"
                f" {MAX_MANIFEST_ID_CHARS} characters; nothing was paid",
                status=402,
                request_id=self.request_id,
            )
        return challenge

    def paid_call(self, runner: Runner, ticket: Ticket) -> requests.Response:
        """The 200 response of the paid call, or raise. Never buys anything."""
        headers = {PAYER_ADDRESS_HEADER: self.payer_address, PAYMENT_HEADER: ticket.payment}
        if ticket.seg_creds:
            headers[SEGMENT_HEADER] = ticket.seg_creds
        path = url_path(runner.url)
        attempts = 1 + PAID_CALL_RETRIES
        last_problem = "no attempt made"
        for attempt in range(1, attempts + 1):
            try:
                response = send(
                    self.http,
                    "POST",
                    runner.url,
                    step="paid-call",
                    request_id=self.request_id,
                    json=runner_payload(self.request),
                    headers=headers,
                    timeout=self.config.inference_timeout,
                    max_body=self.config.max_result_bytes,
                )
            except BodyTooLargeError as exc:
                raise LivepeerPaidCallFailedError(
                    exc.message + " (paid; not paying again)",
                    status=exc.status,
                    request_id=self.request_id,
                ) from exc
            except requests.RequestException as exc:
                last_problem = transport_failure(exc)
                if was_not_sent(exc):
                    pause_before_retry(attempt, attempts, None)
                    continue
                # It reached the orchestrator, which may have processed the payment:
                # sending it again would be refused (nonce seen), and we never buy twice.
                raise LivepeerPaidCallFailedError(
                    f"livepeer runner POST {path}: {last_problem} (paid; not re-sending)",
                    request_id=self.request_id,
                ) from exc
            status = response.status_code
            if status == 200:
                return response
            if 300 <= status < 400:
                raise redirect_error(response, runner.url, self.request_id)
            _code, message = response_message(response)
            if status in BEFORE_PAYMENT_STATUSES:
                last_problem = f"HTTP {status}" + (f" - {message}" if message else "")
                pause_before_retry(
                    attempt, attempts, parse_retry_after(response.headers.get("Retry-After"))
                )
                continue
            note = " (paid; not paying again)"
            if attempt > 1 and status == 400:
                note = " (the payment was already processed; not paying again)"
            raise LivepeerPaidCallFailedError(
                describe(
                    upstream="runner", method="POST", path=path, status=status, message=message
                )
                + note,
                status=status,
                request_id=self.request_id,
            )
        raise LivepeerPaidCallFailedError(
            f"livepeer runner POST {path}: {last_problem} after {attempts} attempts"
            " with the same payment (paid; not paying again)",
            request_id=self.request_id,
        )
