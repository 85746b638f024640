"""The ``live-runner`` backend: pay a Livepeer single-shot runner through a remote signer.

One ``generate`` call (pymthouse-api.md §9.3, livepeer-api.md §4.6):

1. ``GET {discovery_url}``; keep single-shot runners whose app is
   ``image-generation/{model_id}`` and whose price unit we can pay;
2. ``POST {signer_url}/sign-orchestrator-info`` → payer address (cached);
3. unpaid challenge ``POST {runner}`` → 402 ``{payment_params, manifest_id, payment_url}``;
   a runner that fails here (5xx, timeout, dropped) costs nothing: try the next one;
4. ``guard.claim()`` → ``POST {signer_url}/generate-live-payment`` → ticket; 480 refreshes
   the params (at most twice), 482 means the runner's balance already covers the call;
5. paid ``POST {runner}`` with ``Livepeer-Payment``/``Livepeer-Segment``; on 5xx or a lost
   connection the *same* payment is re-sent to the *same* runner, at most twice more.
   A queue receipt is polled to completion;
6. the images are decoded/downloaded and checked.

At most one ticket is bought per successful path through step 4, and a ticket is never
bought again after the paid call has started: a ``generate`` never pays twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin, urlsplit

import requests  # noqa: TID251 -- integrations.livepeer is the one Livepeer HTTP client
from pydantic import BaseModel, ValidationError

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerBadRequestError,
    LivepeerError,
    LivepeerInsufficientBalanceError,
    LivepeerModelUnavailableError,
    LivepeerOutcomeUnknownError,
    LivepeerPaidCallFailedError,
    LivepeerPriceExceededError,
    LivepeerProtocolError,
    LivepeerUnavailableError,
    describe,
    error_for_status,
    parse_retry_after,
    response_message,
)
from integrations.livepeer.images import ImageFetcher
from integrations.livepeer.schemas import (
    Discovery,
    ImagesResponse,
    PaymentChallenge,
    PaymentResponse,
    PriceInfo,
    QueueReceipt,
    QueueStatus,
    RefreshedParams,
    RunnerInfo,
)
from integrations.livepeer.session import (
    LivepeerSession,
    send,
    transport_failure,
    url_path,
    was_not_sent,
)
from integrations.livepeer.signer import SignerClient, parse_json
from integrations.livepeer.types import (
    GatewayCredentials,
    ImageRequest,
    InferenceResult,
    PaymentGuard,
    PaymentRecord,
    SignerCredentials,
)

logger = logging.getLogger(__name__)

PIPELINE = "text-to-image"
APP_PREFIX = "image-generation/"
SINGLE_SHOT = "single-shot"
ATTRIBUTION_SOURCE = "direct_api"
PAYMENT_METADATA_VERSION = "2026-04-usage-attribution-v1"
PAYER_ADDRESS_HEADER = "Livepeer-Payer-Address"
PAYMENT_HEADER = "Livepeer-Payment"
SEGMENT_HEADER = "Livepeer-Segment"
ORCHESTRATOR_URL_HEADER = "Livepeer-Orchestrator-URL"

#: Signer 480 ("refresh session") answers we act on before giving up (retryable).
MAX_REFRESHES = 2
#: Extra attempts of the paid call with the same payment (never a new ticket).
PAID_CALL_RETRIES = 2
#: Runner statuses on the paid call worth re-sending the same payment for.
PAID_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_BACKOFF_SECONDS = 0.25
MAX_RETRY_SLEEP_SECONDS = 5.0
#: GETs of queue results (free) on transient failures.
RESULT_FETCH_ATTEMPTS = 3

QUEUED_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS", "QUEUED"})
FAILED_STATES = frozenset({"FAILED", "ERROR", "CANCELLED", "CANCELED"})
COMPLETED = "COMPLETED"


def payment_type_for_unit(unit: str) -> str | None:
    """The signer ``type`` for a runner price unit, or ``None`` if we cannot pay it.

    ``fixed`` → ``fixed``; ``hour``/``seconds`` → ``live``; ``720p…`` → ``lv2v``;
    ``pixel`` → ``""`` (billed on ``inPixels``).
    """
    unit = unit.strip().lower()
    if unit == "fixed":
        return "fixed"
    if unit in ("hour", "seconds"):
        return "live"
    if unit.startswith("720p"):
        return "lv2v"
    if unit == "pixel":
        return ""
    return None


ModelT = TypeVar("ModelT", bound=BaseModel)


def max_price(price: PriceInfo, markup: Decimal) -> dict[str, str]:
    """``maxPrice`` for the signer: the advertised price × markup, rounded up, as a string."""
    ceiling = (price.price * markup).to_integral_value(rounding=ROUND_CEILING)
    return {"price": str(int(ceiling)), "currency": price.currency, "unit": price.unit}


def payment_record(runner: Runner, challenge: PaymentChallenge, *, pixels: int) -> PaymentRecord:
    """What the ticket for ``challenge`` buys, at the runner's advertised price."""
    price = runner.price.price
    price_wei = int(price) if price == price.to_integral_value() else None
    units = {"fixed": 1, "": pixels}.get(runner.payment_type)
    fee = price_wei * units if price_wei is not None and units is not None else None
    return PaymentRecord(
        manifest_id=challenge.manifest_id,
        runner_url=runner.url,
        price_wei=price_wei,
        price_unit=runner.price.unit,
        units_paid=units,
        expected_fee_wei=fee,
    )


@dataclass(frozen=True)
class Runner:
    url: str
    app: str
    payment_type: str
    price: PriceInfo


@dataclass(frozen=True)
class Ticket:
    payment: str = field(repr=False)
    seg_creds: str | None = field(repr=False)


Refresh = Literal["refresh"]
NoTicketNeeded = Literal["no-ticket-needed"]


def select_runners(discovery: Discovery, model_id: str, *, request_id: str) -> list[Runner]:
    """Single-shot runners of ``image-generation/{model_id}`` we can pay, best first."""
    if not discovery.orchestrators:
        raise LivepeerUnavailableError(
            "livepeer discovery returned no orchestrators", request_id=request_id
        )
    app = f"{APP_PREFIX}{model_id}"
    matching: list[RunnerInfo] = [
        runner
        for orchestrator in discovery.orchestrators
        for runner in orchestrator.runners
        if runner.app == app
    ]
    if not matching:
        raise LivepeerModelUnavailableError(
            f"livepeer: no orchestrator serves {app}", request_id=request_id
        )
    single_shot = [r for r in matching if (r.mode or SINGLE_SHOT).lower() == SINGLE_SHOT]
    if not single_shot:
        raise LivepeerModelUnavailableError(
            f"livepeer: {app} is only served by persistent runners", request_id=request_id
        )
    runners: list[Runner] = []
    seen: set[str] = set()
    # Runners that report no free capacity go last (stable sort keeps discovery order).
    for info in sorted(single_shot, key=lambda r: r.capacity_available == 0):
        if info.url in seen or info.price_info is None:
            continue
        scheme = urlsplit(info.url).scheme.lower()
        payment_type = payment_type_for_unit(info.price_info.unit)
        if scheme not in ("http", "https") or payment_type is None:
            continue
        seen.add(info.url)
        runners.append(
            Runner(url=info.url, app=info.app, payment_type=payment_type, price=info.price_info)
        )
    if not runners:
        raise LivepeerModelUnavailableError(
            f"livepeer: no runner of {app} has a price we can pay", request_id=request_id
        )
    return runners


class LiveRunnerBackend:
    """Default backend. Needs :class:`SignerCredentials` (a pymthouse signer session)."""

    name = "live-runner"
    credentials_type = SignerCredentials

    def generate(
        self,
        request: ImageRequest,
        *,
        credentials: SignerCredentials | GatewayCredentials,
        guard: PaymentGuard,
    ) -> InferenceResult:
        if not isinstance(credentials, SignerCredentials):
            raise TypeError("the live-runner backend needs SignerCredentials")
        config = LivepeerConfig.from_settings()
        with LivepeerSession(default_timeout=config.signer_timeout) as http:
            call = _LiveRunnerCall(
                http=http, config=config, request=request, credentials=credentials, guard=guard
            )
            return call.run()


class _LiveRunnerCall:
    """The state of one ``generate``: which runners failed and how many tickets we bought."""

    def __init__(
        self,
        *,
        http: LivepeerSession,
        config: LivepeerConfig,
        request: ImageRequest,
        credentials: SignerCredentials,
        guard: PaymentGuard,
    ) -> None:
        self.http = http
        self.config = config
        self.request = request
        self.request_id = request.request_id
        self.guard = guard
        self.signer = SignerClient(
            http=http, config=config, credentials=credentials, request_id=request.request_id
        )
        self.tickets_paid = 0
        self.payer_address = ""

    # --- the flow ---------------------------------------------------------------------

    def run(self) -> InferenceResult:
        runners = select_runners(
            self.signer.discover(), self.request.model_id, request_id=self.request_id
        )
        self.payer_address = self.signer.payer_address()
        problems: list[str] = []
        for runner in runners:
            challenge = self._challenge(runner, problems)
            if challenge is None:
                continue
            if isinstance(challenge, InferenceResult):
                return challenge
            return self._pay_and_call(runner, challenge)
        raise LivepeerUnavailableError(
            f"livepeer: all {len(runners)} runners failed before payment: {'; '.join(problems)}",
            request_id=self.request_id,
        )

    def runner_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "prompt": self.request.prompt,
            "size": f"{self.request.width}x{self.request.height}",
            "model_id": self.request.model_id,
        }
        if self.request.seed is not None:
            payload["seed"] = self.request.seed
        if self.request.negative_prompt:
            payload["negative_prompt"] = self.request.negative_prompt
        return payload

    def _challenge(
        self, runner: Runner, problems: list[str]
    ) -> PaymentChallenge | InferenceResult | None:
        """The runner's 402 challenge; ``None`` (and a note) if this runner failed."""
        try:
            response = send(
                self.http,
                "POST",
                runner.url,
                step="challenge",
                request_id=self.request_id,
                json=self.runner_payload(),
                headers={PAYER_ADDRESS_HEADER: self.payer_address},
                timeout=self.config.signer_timeout,
            )
        except requests.RequestException as exc:
            problems.append(f"{url_path(runner.url)}: {transport_failure(exc)}")
            return None
        status = response.status_code
        if status == 402:
            try:
                return PaymentChallenge.model_validate(response.json())
            except (ValueError, ValidationError):
                problems.append(f"{url_path(runner.url)}: malformed 402 challenge")
                return None
        if status == 200:
            # A runner that does not charge: nothing was claimed, nothing was spent.
            return self._finish(runner, response, manifest_id=None)
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

    def _pay_and_call(self, runner: Runner, challenge: PaymentChallenge) -> InferenceResult:
        refreshes = 0
        while True:
            outcome = self._buy_ticket(runner, challenge)
            if outcome != "refresh":
                break
            if refreshes >= MAX_REFRESHES:
                raise LivepeerUnavailableError(
                    f"livepeer signer asked to refresh payment params {refreshes + 1} times",
                    status=480,
                    request_id=self.request_id,
                )
            refreshes += 1
            challenge = self._refresh(runner, challenge)
        ticket = outcome if isinstance(outcome, Ticket) else None
        return self._paid_call(runner, challenge, ticket)

    def _buy_ticket(
        self, runner: Runner, challenge: PaymentChallenge
    ) -> Ticket | Refresh | NoTicketNeeded:
        """``POST generate-live-payment`` under the guard.

        Every claim ends in ``release()`` (the signer answered with an error, or we never
        reached it), ``confirm()`` (200: a ticket was issued), or neither: the request
        went out and no answer came back, so a ticket may exist (OutcomeUnknown).
        """
        url = self.signer.url("generate-live-payment")
        path = url_path(url)
        body: dict[str, Any] = {
            "orchestrator": challenge.payment_params,
            "type": runner.payment_type,
            "inPixels": self.request.pixels,
            "ManifestID": challenge.manifest_id,
            "app": runner.app,
            "maxPrice": max_price(runner.price, self.config.max_price_markup),
            "gatewayRequestId": self.request_id,
            "pipeline": PIPELINE,
            "modelId": self.request.model_id,
            "attributionSource": ATTRIBUTION_SOURCE,
            "paymentMetadataVersion": PAYMENT_METADATA_VERSION,
        }
        self.guard.claim(manifest_id=challenge.manifest_id, runner_url=runner.url)
        try:
            response = send(
                self.http,
                "POST",
                url,
                step="payment",
                request_id=self.request_id,
                json=body,
                headers=self.signer.auth_headers(),
                timeout=self.config.signer_timeout,
            )
        except requests.RequestException as exc:
            detail = transport_failure(exc)
            message = describe(
                upstream="signer", method="POST", path=path, status=None, detail=detail
            )
            if was_not_sent(exc):
                self.guard.release()
                raise LivepeerUnavailableError(message, request_id=self.request_id) from exc
            raise LivepeerOutcomeUnknownError(
                message + "; a ticket may have been issued", request_id=self.request_id
            ) from exc
        status = response.status_code
        if status == 200:
            self.guard.confirm(payment_record(runner, challenge, pixels=self.request.pixels))
            self.tickets_paid += 1
            try:
                parsed = PaymentResponse.model_validate(response.json())
            except (ValueError, ValidationError) as exc:
                raise LivepeerProtocolError(
                    f"livepeer signer POST {path}: HTTP 200 without a usable payment",
                    status=status,
                    request_id=self.request_id,
                ) from exc
            return Ticket(payment=parsed.payment, seg_creds=parsed.seg_creds)
        if status == 504:
            # A proxy gave up waiting for the signer, which may still have signed.
            raise LivepeerOutcomeUnknownError(
                describe(upstream="signer", method="POST", path=path, status=status)
                + "; a ticket may have been issued",
                status=status,
                request_id=self.request_id,
            )
        self.guard.release()
        _code, upstream_message = response_message(response)
        text = describe(
            upstream="signer", method="POST", path=path, status=status, message=upstream_message
        )
        if status == 480:
            logger.info(
                "livepeer payment [%s]: signer asked to refresh params for %s",
                self.request_id,
                url_path(response.headers.get(ORCHESTRATOR_URL_HEADER, "") or runner.url),
            )
            return "refresh"
        if status == 481:
            raise LivepeerPriceExceededError(text, status=status, request_id=self.request_id)
        if status == 482:
            return "no-ticket-needed"
        if status == 483:
            raise LivepeerInsufficientBalanceError(text, status=status, request_id=self.request_id)
        raise error_for_status(
            response, upstream="signer", method="POST", path=path, request_id=self.request_id
        )

    def _refresh(self, runner: Runner, challenge: PaymentChallenge) -> PaymentChallenge:
        """Fresh payment params: ``{payment_url}/refresh-payment``, else a new challenge."""
        if challenge.payment_url:
            url = urljoin(runner.url, challenge.payment_url).rstrip("/")
            if not url.endswith("/refresh-payment"):
                url += "/refresh-payment"
            try:
                response = send(
                    self.http,
                    "POST",
                    url,
                    step="refresh",
                    request_id=self.request_id,
                    json={"sender": self.payer_address, "manifest_id": challenge.manifest_id},
                    headers={PAYER_ADDRESS_HEADER: self.payer_address},
                    timeout=self.config.signer_timeout,
                )
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 200:
                try:
                    refreshed = RefreshedParams.model_validate(response.json())
                except (ValueError, ValidationError):
                    refreshed = None
                if refreshed is not None:
                    return PaymentChallenge(
                        payment_params=refreshed.payment_params,
                        manifest_id=refreshed.manifest_id or challenge.manifest_id,
                        payment_url=challenge.payment_url,
                    )
        problems: list[str] = []
        fresh = self._challenge(runner, problems)
        if isinstance(fresh, PaymentChallenge):
            return fresh
        raise LivepeerUnavailableError(
            f"livepeer: could not refresh payment params: {'; '.join(problems) or 'no 402'}",
            request_id=self.request_id,
        )

    def _paid_call(
        self, runner: Runner, challenge: PaymentChallenge, ticket: Ticket | None
    ) -> InferenceResult:
        """The paid runner call. Re-sends the same payment on transient failures only."""
        headers = {PAYER_ADDRESS_HEADER: self.payer_address}
        if ticket is not None:
            headers[PAYMENT_HEADER] = ticket.payment
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
                    json=self.runner_payload(),
                    headers=headers,
                    timeout=self.config.inference_timeout,
                )
            except requests.RequestException as exc:
                last_problem = transport_failure(exc)
                self._pause_before_retry(attempt, attempts, None)
                continue
            status = response.status_code
            if status == 200:
                return self._finish(runner, response, manifest_id=challenge.manifest_id)
            _code, message = response_message(response)
            if status in PAID_RETRY_STATUSES:
                last_problem = f"HTTP {status}" + (f" - {message}" if message else "")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self._pause_before_retry(attempt, attempts, retry_after)
                continue
            if status in (400, 422):
                raise LivepeerBadRequestError(
                    describe(
                        upstream="runner", method="POST", path=path, status=status, message=message
                    )
                    + " (after payment)",
                    status=status,
                    request_id=self.request_id,
                )
            if status == 402 and ticket is None:
                raise LivepeerProtocolError(
                    "livepeer: the signer said no ticket was needed (482) but the runner"
                    " still asks for payment",
                    status=status,
                    request_id=self.request_id,
                )
            raise LivepeerPaidCallFailedError(
                describe(
                    upstream="runner", method="POST", path=path, status=status, message=message
                )
                + " (paid; not paying again)",
                status=status,
                request_id=self.request_id,
            )
        raise LivepeerPaidCallFailedError(
            f"livepeer runner POST {path}: {last_problem} after {attempts} attempts"
            " with the same payment (paid; not paying again)",
            request_id=self.request_id,
        )

    @staticmethod
    def _pause_before_retry(attempt: int, attempts: int, retry_after: float | None) -> None:
        if attempt >= attempts:
            return
        delay = retry_after if retry_after is not None else RETRY_BACKOFF_SECONDS * attempt
        time.sleep(min(delay, MAX_RETRY_SLEEP_SECONDS))

    # --- results ----------------------------------------------------------------------

    def _finish(
        self, runner: Runner, response: requests.Response, *, manifest_id: str | None
    ) -> InferenceResult:
        payload = parse_json(response, what="runner result", request_id=self.request_id)
        upstream_request_id: str | None = None
        base_url = runner.url
        if isinstance(payload, dict) and "images" not in payload and "status" in payload:
            receipt = self._parse(QueueReceipt, payload, what="queue receipt")
            upstream_request_id = receipt.request_id
            payload, base_url = self._await_queue(runner, receipt)
        parsed = self._parse(ImagesResponse, payload, what="runner result")
        upstream_request_id = upstream_request_id or parsed.request_id
        fetcher = ImageFetcher(
            http=self.http,
            request_id=self.request_id,
            timeout=self.config.inference_timeout,
            max_bytes=self.config.max_image_bytes,
        )
        images = fetcher.fetch_all(parsed, base_url=base_url)
        logger.info(
            "livepeer generate [%s]: %d image(s) from %s, %d ticket(s)",
            self.request_id,
            len(images),
            url_path(runner.url),
            self.tickets_paid,
        )
        return InferenceResult(
            images=images,
            runner_url=runner.url,
            manifest_id=manifest_id,
            upstream_request_id=upstream_request_id,
            tickets_paid=self.tickets_paid,
        )

    def _parse(self, model: type[ModelT], payload: object, *, what: str) -> ModelT:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise LivepeerProtocolError(
                f"livepeer {what}: unexpected body ({exc.error_count()} errors)",
                request_id=self.request_id,
            ) from exc

    def _poll_url(self, runner: Runner, url: str | None) -> str | None:
        """``url`` resolved against the runner; only the runner's origin or https."""
        if not url:
            return None
        absolute = urljoin(runner.url, url)
        parts, origin = urlsplit(absolute), urlsplit(runner.url)
        same_origin = (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc)
        if not same_origin and parts.scheme != "https":
            raise LivepeerProtocolError(
                f"livepeer queue URL {url_path(absolute)} is neither on the runner nor https",
                request_id=self.request_id,
            )
        return absolute

    def _await_queue(self, runner: Runner, receipt: QueueReceipt) -> tuple[Any, str]:
        """Poll a queue receipt to completion: ``(result payload, its URL)``."""
        status_url = self._poll_url(runner, receipt.status_url)
        response_url = self._poll_url(runner, receipt.response_url)
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
            response_url = self._poll_url(runner, completed.response_url) or response_url
        if response_url is None and status_url is not None:
            response_url = status_url.rstrip("/").removesuffix("/status")
        if response_url is None:
            raise LivepeerProtocolError(
                f"livepeer queue receipt {label} has no response_url", request_id=self.request_id
            )
        return self._get_json(response_url, step="queue-result"), response_url

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
            )
        except requests.RequestException:
            return None
        if response.status_code in PAID_RETRY_STATUSES:
            return None
        if response.status_code != 200:
            raise self._paid_failure(response, "GET", status_url)
        return self._parse(
            QueueStatus,
            parse_json(response, what="queue status", request_id=self.request_id),
            what="queue status",
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
                )
            except requests.RequestException as exc:
                last_problem = transport_failure(exc)
                self._pause_before_retry(attempt, RESULT_FETCH_ATTEMPTS, None)
                continue
            if response.status_code in PAID_RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}"
                self._pause_before_retry(attempt, RESULT_FETCH_ATTEMPTS, None)
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
