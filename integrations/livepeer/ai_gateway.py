"""The ``ai-gateway`` backend: ``POST {gateway}/text-to-image`` (docs/upstream.md §L3).

**Nobody is charged per user on this path.** go-livepeer's gateway ignores
``Authorization`` and ``X-Request-Id`` and pays orchestrators with its own key, so
pymthouse never sees these calls: the gateway operator pays, and pixelhouse's local
ledger is the only per-user charge. A user token is sent only when
``LIVEPEER_GATEWAY_HONOURS_USER_TOKENS`` says the gateway honours one.

A per-image ``max_fee_wei`` cannot be enforced here (the gateway pays, at a price it
alone knows): it is accepted and ignored.

The POST may spend (the operator's) money, so it runs under the guard: error
statuses and connections that failed (or dropped: go-livepeer crashes without an
answer when it finds no orchestrator) release it; a read timeout or a proxy's 504
leaves it claimed (outcome unknown).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests
from pydantic import ValidationError

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerInsufficientBalanceError,
    LivepeerOutcomeUnknownError,
    LivepeerProtocolError,
    LivepeerUnavailableError,
    describe,
    error_for_status,
    response_message,
)
from integrations.livepeer.images import ImageFetcher
from integrations.livepeer.schemas import ImagesResponse
from integrations.livepeer.session import (
    AddressPolicy,
    BodyTooLargeError,
    LivepeerSession,
    is_timeout,
    send,
    shared_session,
    transport_failure,
    trusted_hosts,
    url_path,
    was_not_sent,
)
from integrations.livepeer.types import (
    GatewayCredentials,
    ImageRequest,
    InferenceResult,
    PaymentGuard,
    PaymentRecord,
    SignerCredentials,
    check_max_fee_wei,
    raw_token,
)

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
#: ``/stream/<8-hex request id>/<file>``: the gateway's id for this request.
_STREAM_PATH = re.compile(r"/stream/([0-9A-Za-z_-]+)/[^/]+$")


def stream_request_id(url: str) -> str | None:
    match = _STREAM_PATH.search(url_path(url))
    return match.group(1) if match else None


class AiGatewayBackend:
    """Needs :class:`GatewayCredentials` (the gateway URL and a pymthouse user JWT)."""

    name = "ai-gateway"
    credentials_type = GatewayCredentials

    def generate(
        self,
        request: ImageRequest,
        *,
        credentials: SignerCredentials | GatewayCredentials,
        guard: PaymentGuard,
        max_fee_wei: int | None = None,
    ) -> InferenceResult:
        """One image through the gateway.

        ``max_fee_wei`` is accepted for the common backend interface but **not enforced**:
        the gateway pays orchestrators with its own key, within its operator's own price
        limits, and nothing here learns the price paid.
        """
        if not isinstance(credentials, GatewayCredentials):
            raise TypeError("the ai-gateway backend needs GatewayCredentials")
        check_max_fee_wei(max_fee_wei)  # validated alike, then not used (see above)
        config = LivepeerConfig.from_settings()
        policy = AddressPolicy(
            allow_private=config.allow_private_addresses,
            trusted_hosts=trusted_hosts(config.gateway_url),
        )
        http = shared_session(default_timeout=config.inference_timeout, address_policy=policy)
        return _generate(http, config, request, credentials, guard)


def request_body(request: ImageRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_id": request.model_id,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width,
        "height": request.height,
        "num_images_per_prompt": 1,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def _generate(
    http: LivepeerSession,
    config: LivepeerConfig,
    request: ImageRequest,
    credentials: GatewayCredentials,
    guard: PaymentGuard,
) -> InferenceResult:
    request_id = request.request_id
    url = f"{credentials.gateway_url.rstrip('/')}/text-to-image"
    path = url_path(url)
    headers = {REQUEST_ID_HEADER: request_id}
    if credentials.bearer_token is not None:
        headers["Authorization"] = f"Bearer {raw_token(credentials.bearer_token)}"
    guard.claim(manifest_id=None, runner_url=None)
    try:
        response = send(
            http,
            "POST",
            url,
            step="gateway",
            request_id=request_id,
            json=request_body(request),
            headers=headers,
            timeout=config.inference_timeout,
            max_body=config.max_result_bytes,
        )
    except BodyTooLargeError as exc:
        if exc.status == 200:
            guard.confirm(PaymentRecord(manifest_id=None, runner_url=None))
            raise
        guard.release()
        raise
    except requests.RequestException as exc:
        message = describe(
            upstream="gateway", method="POST", path=path, status=None, detail=transport_failure(exc)
        )
        if is_timeout(exc) and not was_not_sent(exc):
            raise LivepeerOutcomeUnknownError(
                message + "; the gateway may have paid", request_id=request_id
            ) from exc
        # Refused, or dropped without an answer: go-livepeer's no-orchestrator crash.
        guard.release()
        raise LivepeerUnavailableError(message, request_id=request_id) from exc
    status = response.status_code
    if status == 200:
        guard.confirm(PaymentRecord(manifest_id=None, runner_url=None))
        return _finish(http, config, request, url, response)
    if status == 504:
        raise LivepeerOutcomeUnknownError(
            describe(upstream="gateway", method="POST", path=path, status=status)
            + "; the gateway may have paid",
            status=status,
            request_id=request_id,
        )
    guard.release()
    if status in (402, 483):
        _code, upstream_message = response_message(response)
        raise LivepeerInsufficientBalanceError(
            describe(
                upstream="gateway",
                method="POST",
                path=path,
                status=status,
                message=upstream_message,
            ),
            status=status,
            request_id=request_id,
        )
    raise error_for_status(
        response, upstream="gateway", method="POST", path=path, request_id=request_id
    )


def _finish(
    http: LivepeerSession,
    config: LivepeerConfig,
    request: ImageRequest,
    url: str,
    response: requests.Response,
) -> InferenceResult:
    request_id = request.request_id
    path = url_path(url)
    if not response.content.strip():
        # go-livepeer answers an unrouted request with an empty 200.
        raise LivepeerProtocolError(
            f"livepeer gateway POST {path}: HTTP 200 with an empty body", request_id=request_id
        )
    try:
        parsed = ImagesResponse.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise LivepeerProtocolError(
            f"livepeer gateway POST {path}: HTTP 200 body is not an image response",
            status=200,
            request_id=request_id,
        ) from exc
    fetcher = ImageFetcher(
        http=http,
        request_id=request_id,
        timeout=config.inference_timeout,
        max_bytes=config.max_image_bytes,
        allow_private=config.allow_private_addresses,
        expected_size=(request.width, request.height),
    )
    images = fetcher.fetch_first(parsed, base_url=url)
    upstream_id = next(
        (sid for sid in (stream_request_id(item.url) for item in parsed.images) if sid), None
    )
    logger.info(
        "livepeer generate [%s]: %d image(s) from gateway %s", request_id, len(images), path
    )
    return InferenceResult(
        images=images,
        runner_url=None,
        manifest_id=None,
        upstream_request_id=upstream_id or parsed.request_id,
        tickets_paid=0,
    )
