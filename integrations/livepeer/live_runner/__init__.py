"""The ``live-runner`` backend: pay a Livepeer single-shot runner through a remote signer.

One ``generate`` call, one module per step (facts: docs/upstream.md §L5-L9, go-livepeer
``176aa415``):

1. ``selection.py``: ``GET {discovery_url}``; keep single-shot runners of
   ``image-generation/{model_id}`` with a price unit we pay (``pricing.py``: ``fixed``
   or ``seconds``) and an acceptable URL; call them at ``{url}/``;
2. ``runner_calls.py``: unpaid challenge ``POST {url}/`` with ``Livepeer-Payer-Address``
   (from ``POST {signer}/sign-orchestrator-info``, cached) → 402 ``{payment_params,
   manifest_id, payment_url}``; the ``manifest_id`` is validated here, before any claim;
3. ``payment.py``: ``guard.claim(manifest_id, runner_url)`` → ``POST {signer}/generate-
   live-payment`` → ``guard.confirm(PaymentRecord)`` with the exact expected fee, or
   ``release()`` only on answers given before any ticket leaves the signer; 480 →
   a fresh challenge (step 2), at most twice;
4. ``runner_calls.py``: paid ``POST {url}/``; the same payment is re-sent only after a
   failure before payment processing (capacity 503, connection refused);
5. ``queue.py``: a queue receipt is polled to completion (GETs, free);
6. ``call.py`` / ``images.py``: only the first image is decoded or downloaded, and it
   must be PNG or JPEG of exactly the requested size.

At most one ticket is bought per ``generate`` that reaches step 4, and a ticket is
never bought after the paid call has started. With a per-image ``max_fee_wei``, runners
whose expected fee is above it are dropped after step 1 (none left:
``PriceExceededError``, nothing claimed or sent) and ``maxPrice`` is capped at
``max_fee_wei // units_per_payment`` per unit in step 3.
"""

from __future__ import annotations

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.live_runner.call import LiveRunnerCall
from integrations.livepeer.live_runner.pricing import Pricing, pricing_for_unit
from integrations.livepeer.live_runner.selection import Runner, app_url, select_runners
from integrations.livepeer.session import AddressPolicy, shared_session, trusted_hosts
from integrations.livepeer.types import (
    GatewayCredentials,
    ImageRequest,
    InferenceResult,
    PaymentGuard,
    SignerCredentials,
    check_max_fee_wei,
)

__all__ = [
    "LiveRunnerBackend",
    "Pricing",
    "Runner",
    "app_url",
    "pricing_for_unit",
    "select_runners",
]


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
        max_fee_wei: int | None = None,
    ) -> InferenceResult:
        """One image. ``max_fee_wei``: this image's ceiling in wei (``None``: none).

        With a ceiling, runners whose expected fee is above it are skipped; if none is
        within it, :class:`PriceExceededError` is raised before anything is claimed or
        sent to the signer. The signer's ``maxPrice`` is capped at the ceiling per unit.
        """
        if not isinstance(credentials, SignerCredentials):
            raise TypeError("the live-runner backend needs SignerCredentials")
        check_max_fee_wei(max_fee_wei)
        config = LivepeerConfig.from_settings()
        policy = AddressPolicy(
            allow_private=config.allow_private_addresses,
            trusted_hosts=trusted_hosts(credentials.signer_url, credentials.discovery_url),
        )
        http = shared_session(default_timeout=config.signer_timeout, address_policy=policy)
        call = LiveRunnerCall(
            http=http,
            config=config,
            request=request,
            credentials=credentials,
            guard=guard,
            max_fee_wei=max_fee_wei,
        )
        return call.run()
