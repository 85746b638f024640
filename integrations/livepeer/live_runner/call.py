"""One ``generate`` on the live-runner backend, step by step (see ``__init__``)."""

from __future__ import annotations

import logging

import requests

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import LivepeerUnavailableError
from integrations.livepeer.images import ImageFetcher
from integrations.livepeer.live_runner.payment import TicketBuyer, price_exceeded
from integrations.livepeer.live_runner.queue import QueuePoller, parse_model
from integrations.livepeer.live_runner.runner_calls import RunnerCalls
from integrations.livepeer.live_runner.selection import Runner, select_runners
from integrations.livepeer.schemas import ImagesResponse, PaymentChallenge, QueueReceipt
from integrations.livepeer.session import LivepeerSession, url_path
from integrations.livepeer.signer import SignerClient, parse_json
from integrations.livepeer.types import (
    MAX_REQUEST_ID_CHARS,
    ImageRequest,
    InferenceResult,
    PaymentGuard,
    SignerCredentials,
    is_upstream_id,
)

logger = logging.getLogger(__name__)

#: Signer 480 ("refresh session") answers we act on before giving up (retryable).
MAX_REFRESHES = 2


class LiveRunnerCall:
    """The state of one ``generate``: the runners tried and the tickets bought."""

    def __init__(
        self,
        *,
        http: LivepeerSession,
        config: LivepeerConfig,
        request: ImageRequest,
        credentials: SignerCredentials,
        guard: PaymentGuard,
        max_fee_wei: int | None = None,
    ) -> None:
        self.http = http
        self.config = config
        self.request = request
        self.request_id = request.request_id
        self.signer = SignerClient(
            http=http, config=config, credentials=credentials, request_id=request.request_id
        )
        self.buyer = TicketBuyer(
            http=http,
            config=config,
            signer=self.signer,
            guard=guard,
            model_id=request.model_id,
            request_id=request.request_id,
            max_fee_wei=max_fee_wei,
        )

    def run(self) -> InferenceResult:
        # 1. runner selection
        runners = select_runners(
            self.signer.discover(),
            self.request.model_id,
            request_id=self.request_id,
            allow_private=self.config.allow_private_addresses,
            app_path=self.config.runner_app_path,
        )
        # A runner whose payment would cost more than this image's ceiling is never
        # paid (nor challenged): the next one within it is tried; none: nothing is sent.
        problems: list[str] = []
        affordable = [runner for runner in runners if self.buyer.affordable(runner)]
        if self.buyer.max_fee_wei is not None:
            if not affordable:
                raise price_exceeded(runners, self.buyer.max_fee_wei, request_id=self.request_id)
            problems.extend(
                f"{url_path(runner.url)}: fee above this image's ceiling"
                for runner in runners
                if runner not in affordable
            )
        calls = RunnerCalls(
            http=self.http,
            config=self.config,
            request=self.request,
            payer_address=self.signer.payer_address(),
        )
        # 2. the unpaid challenge; a runner failing here costs nothing: try the next
        for runner in affordable:
            challenge = calls.challenge(runner, problems)
            if challenge is not None:
                return self._pay_and_call(calls, runner, challenge)
        raise LivepeerUnavailableError(
            f"livepeer: all {len(runners)} runners failed before payment: {'; '.join(problems)}",
            request_id=self.request_id,
        )

    def _pay_and_call(
        self, calls: RunnerCalls, runner: Runner, challenge: PaymentChallenge
    ) -> InferenceResult:
        # 3. payment; a 480 is answered with a fresh unpaid challenge (new params and
        # manifest), never with "{payment_url}/refresh-payment", which does not exist.
        refreshes = 0
        while True:
            outcome = self.buyer.buy(runner, challenge)
            if outcome != "refresh":
                break
            if refreshes >= MAX_REFRESHES:
                raise LivepeerUnavailableError(
                    f"livepeer signer asked to refresh payment params {refreshes + 1} times",
                    status=480,
                    request_id=self.request_id,
                )
            refreshes += 1
            problems: list[str] = []
            fresh = calls.challenge(runner, problems)
            if fresh is None:
                raise LivepeerUnavailableError(
                    f"livepeer: could not refresh payment params: {'; '.join(problems)}",
                    request_id=self.request_id,
                )
            challenge = fresh
        # 4. the paid call (same payment re-sent only before payment processing)
        response = calls.paid_call(runner, outcome)
        # 5. queue polling (some apps) and 6. the image we keep
        return self._finish(runner, response, manifest_id=challenge.manifest_id)

    def _finish(
        self, runner: Runner, response: requests.Response, *, manifest_id: str
    ) -> InferenceResult:
        payload = parse_json(response, what="runner result", request_id=self.request_id)
        upstream_request_id: str | None = None
        base_url = runner.url
        if isinstance(payload, dict) and "images" not in payload and "status" in payload:
            receipt = parse_model(
                QueueReceipt, payload, what="queue receipt", request_id=self.request_id
            )
            upstream_request_id = receipt.request_id
            poller = QueuePoller(
                http=self.http, config=self.config, runner=runner, request_id=self.request_id
            )
            payload, base_url = poller.result(receipt)
        parsed = parse_model(
            ImagesResponse, payload, what="runner result", request_id=self.request_id
        )
        upstream_request_id = upstream_request_id or parsed.request_id
        if upstream_request_id is not None and not is_upstream_id(
            upstream_request_id, max_chars=MAX_REQUEST_ID_CHARS
        ):
            # Informational only, and the image is paid for: drop it, keep the image.
            logger.warning(
                "livepeer generate [%s]: dropped a malformed request id", self.request_id
            )
            upstream_request_id = None
        fetcher = ImageFetcher(
            http=self.http,
            request_id=self.request_id,
            timeout=self.config.inference_timeout,
            max_bytes=self.config.max_image_bytes,
            allow_private=self.config.allow_private_addresses,
            expected_size=(self.request.width, self.request.height),
        )
        images = fetcher.fetch_first(parsed, base_url=base_url)
        logger.info(
            "livepeer generate [%s]: image from %s, %d ticket(s)",
            self.request_id,
            url_path(runner.url),
            self.buyer.tickets_paid,
        )
        return InferenceResult(
            images=images,
            runner_url=runner.url,
            manifest_id=manifest_id,
            upstream_request_id=upstream_request_id,
            tickets_paid=self.buyer.tickets_paid,
        )
