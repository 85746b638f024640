"""Step 3: buy one ticket from the remote signer, under the caller's payment guard.

``POST {signer}/generate-live-payment`` is the only request that spends the user's
money. The guard is claimed (naming the challenge's ``manifest_id`` and the runner)
immediately before it is sent, and every claim ends in exactly one of:

* ``confirm(record)``: the signer answered 200 (a ticket exists; ``record`` says what
  it bought and its expected fee);
* ``release()``: the signer gave an answer that go-livepeer only gives **before** any
  ticket leaves it (table below), or the request provably never left this machine;
* neither: anything else (500, 502, 504, a timeout or a connection dropped after
  sending): a ticket may exist, so :class:`LivepeerOutcomeUnknownError` is raised and
  the claim stays held. The caller never pays again for that generation.

Signer statuses that release the claim, with the code path that produces them in
go-livepeer ``server/remote_signer.go`` at commit ``176aa415`` (``GenerateLivePayment``;
docs/upstream.md §L8):
none of them is written after a payment is returned, and none records a
``create_signed_ticket`` usage event (that is only sent after the webhook accepted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from pydantic import ValidationError

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerAuthError,
    LivepeerBadRequestError,
    LivepeerError,
    LivepeerInsufficientBalanceError,
    LivepeerOutcomeUnknownError,
    LivepeerPriceExceededError,
    LivepeerProtocolError,
    LivepeerRateLimitedError,
    LivepeerUnavailableError,
    PriceExceededError,
    describe,
    parse_retry_after,
    response_message,
)
from integrations.livepeer.live_runner.pricing import (
    expected_fee_wei,
    max_price,
    max_price_per_unit,
    within_ceiling,
)
from integrations.livepeer.live_runner.selection import Runner
from integrations.livepeer.schemas import PaymentChallenge, PaymentResponse
from integrations.livepeer.session import (
    BodyTooLargeError,
    LivepeerSession,
    send,
    transport_failure,
    url_path,
    was_not_sent,
)
from integrations.livepeer.signer import SignerClient
from integrations.livepeer.types import PaymentGuard, PaymentRecord

logger = logging.getLogger(__name__)

PIPELINE = "text-to-image"
ATTRIBUTION_SOURCE = "direct_api"
PAYMENT_METADATA_VERSION = "2026-04-usage-attribution-v1"
ORCHESTRATOR_URL_HEADER = "Livepeer-Orchestrator-URL"

#: Signer answers given before any ticket leaves the signer: the claim is released.
#: Each maps to the error raised (``None``: handled by the caller, see ``buy``).
RELEASING_STATUSES: dict[int, tuple[type[LivepeerError] | None, str]] = {
    400: (
        LivepeerBadRequestError,
        # Request validation: JSON decode, missing orchestrator / priceInfo /
        # ticketParams, bad state signature, missing manifestID, invalid job type,
        # missing billable units, parseRemotePaymentMaxPrice (type "" with a maxPrice,
        # unit mismatch), "numTickets exceeds maximum of 100": all return before
        # genPayment.
        "request validation, before genPayment",
    ),
    401: (
        LivepeerAuthError,
        # authLivePayment: the auth webhook's own status (pymthouse: bad or expired
        # JWT), relayed before the payment is returned and before any usage event.
        "auth webhook refusal",
    ),
    403: (LivepeerAuthError, "auth webhook refusal"),
    429: (LivepeerRateLimitedError, "auth webhook or proxy refusal, before signing"),
    480: (
        None,
        # shouldRefreshSession: HTTPStatusRefreshSession, before any fee is computed.
        "refresh session, before genPayment",
    ),
    481: (
        LivepeerPriceExceededError,
        # checkRemotePaymentPrice against the configured / request / initial ceilings
        # (before genPayment); genPayment's "price has more than doubled" (no payment
        # returned); the webhook's maxPrice (before the payment is returned).
        "price above a ceiling, no payment returned",
    ),
    482: (
        None,
        # balUpdate.NumTickets <= 0: only with a restored state balance, before genPayment.
        "no tickets needed, before genPayment",
    ),
    483: (
        LivepeerInsufficientBalanceError,
        # pymthouse's auth webhook refusing for balance, relayed by authLivePayment.
        "auth webhook balance refusal",
    ),
    503: (
        LivepeerUnavailableError,
        # The auth webhook's "billing unavailable" status (go-livepeer masks the
        # message as "Service Unavailable Error"); GenerateLivePayment itself never
        # answers 503, and a proxy answering 503 did not reach it.
        "auth webhook or proxy: billing unavailable",
    ),
}

Refresh = Literal["refresh"]


@dataclass(frozen=True)
class Ticket:
    payment: str = field(repr=False)
    seg_creds: str | None = field(repr=False)


def payment_record(runner: Runner, challenge: PaymentChallenge) -> PaymentRecord:
    """What the ticket for ``challenge`` buys, known before it is bought."""
    return PaymentRecord(
        manifest_id=challenge.manifest_id,
        runner_url=runner.url,
        price_wei=runner.price_wei,
        price_unit=runner.pricing.unit,
        units_paid=runner.pricing.units_per_payment,
        expected_fee_wei=expected_fee_wei(runner.price_wei, runner.pricing),
    )


def payment_body(
    runner: Runner,
    challenge: PaymentChallenge,
    *,
    model_id: str,
    markup: Any,
    max_fee_wei: int | None = None,
) -> dict[str, Any]:
    """The ``RemotePaymentRequest``: never ``type:""``, ``maxPrice`` in the runner's unit.

    ``maxPrice`` is the runner's price × markup, and with a per-image ``max_fee_wei`` never
    more than ``max_fee_wei // units_per_payment`` per unit: the signer refuses (481) an
    orchestrator price above it, so a price that rose after our check is never paid.

    No ``gatewayRequestId``: go-livepeer ignores it and the usage collector writes the
    signer's own request id there; the join key is ``ManifestID``.
    """
    cap = None if max_fee_wei is None else max_price_per_unit(max_fee_wei, runner.pricing)
    return {
        "orchestrator": challenge.payment_params,
        "type": runner.pricing.payment_type,
        "ManifestID": challenge.manifest_id,
        "app": runner.app,
        "maxPrice": max_price(runner.price_wei, runner.pricing.unit, markup, cap_per_unit=cap),
        "pipeline": PIPELINE,
        "modelId": model_id,
        "attributionSource": ATTRIBUTION_SOURCE,
        "paymentMetadataVersion": PAYMENT_METADATA_VERSION,
    }


def price_exceeded(
    runners: list[Runner], max_fee_wei: int, *, request_id: str
) -> PriceExceededError:
    """No runner of ``runners`` can be paid within this image's ceiling."""
    fees = sorted(expected_fee_wei(runner.price_wei, runner.pricing) for runner in runners)
    cheapest = f", lowest runner fee {fees[0]} wei" if fees else ""
    return PriceExceededError(
        "livepeer: the network price rose above what this image was admitted at"
        f" (ceiling {max_fee_wei} wei{cheapest}); nothing was paid",
        request_id=request_id,
    )


class TicketBuyer:
    """Buys tickets for one ``generate`` and counts them.

    ``max_fee_wei`` (``None``: none) is the image's ceiling: a runner whose expected fee
    is above it is never paid (checked before the claim), and ``maxPrice`` never lets
    the signer pay more per unit than the ceiling allows.
    """

    def __init__(
        self,
        *,
        http: LivepeerSession,
        config: LivepeerConfig,
        signer: SignerClient,
        guard: PaymentGuard,
        model_id: str,
        request_id: str,
        max_fee_wei: int | None = None,
    ) -> None:
        self.http = http
        self.config = config
        self.signer = signer
        self.guard = guard
        self.model_id = model_id
        self.request_id = request_id
        self.max_fee_wei = max_fee_wei
        self.tickets_paid = 0

    def affordable(self, runner: Runner) -> bool:
        """True when one payment to ``runner`` stays within the image's ceiling."""
        return within_ceiling(runner.price_wei, runner.pricing, self.max_fee_wei)

    def buy(self, runner: Runner, challenge: PaymentChallenge) -> Ticket | Refresh:
        """A ticket, or ``"refresh"`` (480: the caller fetches a fresh challenge)."""
        if self.max_fee_wei is not None and not self.affordable(runner):
            # Before the claim: no claim, no signer call, no ticket.
            raise price_exceeded([runner], self.max_fee_wei, request_id=self.request_id)
        url = self.signer.url("generate-live-payment")
        path = url_path(url)
        body = payment_body(
            runner,
            challenge,
            model_id=self.model_id,
            markup=self.config.max_price_markup,
            max_fee_wei=self.max_fee_wei,
        )
        record = payment_record(runner, challenge)
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
                max_body=self.config.max_response_bytes,
            )
        except BodyTooLargeError as exc:
            if exc.status == 200:
                self._confirm(record)
                raise LivepeerProtocolError(
                    exc.message + " (a ticket was issued; not paying again)",
                    status=200,
                    request_id=self.request_id,
                ) from exc
            raise self._unknown(path, exc.status, "oversized answer") from exc
        except requests.RequestException as exc:
            detail = transport_failure(exc)
            if was_not_sent(exc):
                self.guard.release()
                raise LivepeerUnavailableError(
                    describe(
                        upstream="signer", method="POST", path=path, status=None, detail=detail
                    ),
                    request_id=self.request_id,
                ) from exc
            raise self._unknown(path, None, detail) from exc
        status = response.status_code
        if status == 200:
            self._confirm(record)
            return self._ticket(response, path)
        if status not in RELEASING_STATUSES:
            # 500 (webhook failure, genPayment / genSegCreds / nonce / state signing
            # errors, some after tickets were created), 502 (webhook maxPrice), 504 and
            # anything unexpected: a ticket may exist.
            raise self._unknown(path, status, None, response)
        self.guard.release()
        error_class, _reason = RELEASING_STATUSES[status]
        _code, message = response_message(response)
        text = describe(upstream="signer", method="POST", path=path, status=status, message=message)
        if status == 480:
            logger.info(
                "livepeer payment [%s]: signer asked to refresh params for %s",
                self.request_id,
                url_path(response.headers.get(ORCHESTRATOR_URL_HEADER, "") or runner.url),
            )
            return "refresh"
        if error_class is None:  # 482: we never send state, so no balance can cover us
            raise LivepeerProtocolError(
                text + " (no tickets needed, but this call carried no payment state)",
                status=status,
                request_id=self.request_id,
            )
        raise error_class(
            text,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            request_id=self.request_id,
        )

    def _confirm(self, record: PaymentRecord) -> None:
        self.guard.confirm(record)
        self.tickets_paid += 1

    def _unknown(
        self,
        path: str,
        status: int | None,
        detail: str | None,
        response: requests.Response | None = None,
    ) -> LivepeerOutcomeUnknownError:
        message = response_message(response)[1] if response is not None else None
        return LivepeerOutcomeUnknownError(
            describe(
                upstream="signer",
                method="POST",
                path=path,
                status=status,
                message=message,
                detail=detail,
            )
            + "; a ticket may have been issued (claim kept, not paying again)",
            status=status,
            request_id=self.request_id,
        )

    def _ticket(self, response: requests.Response, path: str) -> Ticket:
        try:
            parsed = PaymentResponse.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise LivepeerProtocolError(
                f"livepeer signer POST {path}: HTTP 200 without a usable payment",
                status=200,
                request_id=self.request_id,
            ) from exc
        return Ticket(payment=parsed.payment, seg_creds=parsed.seg_creds)
