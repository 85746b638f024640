"""Read-only signer calls: orchestrator discovery and the payer address.

Neither spends money, so both may be repeated freely by the caller; the paying call
(``generate-live-payment``) lives in ``live_runner.py`` next to its guard handling.

**Discovery is cached briefly per discovery URL** (``LIVEPEER_DISCOVERY_CACHE_SECONDS``,
default 5 s, 0 turns it off), in this process only: a generation may see orchestrators,
runners, prices and capacity up to that many seconds old. A vanished runner then fails
its unpaid challenge and the next runner is tried; a price raised in that window is
never paid, because the signer's ``maxPrice`` is built from the discovered price (times
``LIVEPEER_MAX_PRICE_MARKUP``) and refuses anything above it.

The answer is not per user: go-livepeer's ``GetOrchestrators`` serves one process-wide
cache and does not authenticate the call (livepeer-api.md §4.2; the sandbox checks the
Bearer but answers every user alike), so users share the entry; a cached answer skips
that Bearer check, and a user whose token is bad is refused at ``generate-live-payment``.
The key is the exact discovery URL (query included), so signer sessions naming
different URLs never share one. Only a validated 200 answer is cached;
an error is not. The payer address is cached per signer URL for
``PAYER_ADDRESS_TTL_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests
from pydantic import ValidationError

from integrations.livepeer.config import LivepeerConfig
from integrations.livepeer.errors import (
    LivepeerError,
    LivepeerProtocolError,
    LivepeerUnavailableError,
    describe,
    error_for_status,
)
from integrations.livepeer.schemas import Discovery, SignerInfo
from integrations.livepeer.session import LivepeerSession, send, transport_failure, url_path
from integrations.livepeer.types import SignerCredentials, raw_token

logger = logging.getLogger(__name__)

PAYER_ADDRESS_TTL_SECONDS = 300.0

_payer_addresses: dict[str, tuple[str, float]] = {}
_payer_lock = threading.Lock()


#: ``discovery URL → (expires at (monotonic), validated answer)``; ``Discovery`` is frozen.
_discoveries: dict[str, tuple[float, Discovery]] = {}
_MAX_CACHED_DISCOVERIES = 64


def clear_payer_address_cache() -> None:
    """Forget cached payer addresses and discovery answers (tests; a key rotation)."""
    with _payer_lock:
        _payer_addresses.clear()
        _discoveries.clear()


def parse_json(response: requests.Response, *, what: str, request_id: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise LivepeerProtocolError(
            f"livepeer {what}: HTTP {response.status_code} body is not JSON",
            status=response.status_code,
            request_id=request_id,
        ) from exc


class SignerClient:
    """The signer endpoints for one ``generate`` call (one user's credentials)."""

    def __init__(
        self,
        *,
        http: LivepeerSession,
        config: LivepeerConfig,
        credentials: SignerCredentials,
        request_id: str,
    ) -> None:
        self.http = http
        self.config = config
        self.credentials = credentials
        self.request_id = request_id

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {raw_token(self.credentials.access_token)}"}

    def url(self, endpoint: str) -> str:
        return f"{self.credentials.signer_url.rstrip('/')}/{endpoint}"

    def discover(self) -> Discovery:
        """``GET {discovery_url}``: every orchestrator and its runners.

        Reused for ``discovery_cache_seconds`` per exact URL (see the module docstring
        for the staleness and why users may share it).
        """
        url = self.credentials.discovery_url
        ttl = self.config.discovery_cache_seconds
        now = time.monotonic()
        if ttl > 0:
            with _payer_lock:
                cached = _discoveries.get(url)
            if cached is not None and cached[0] > now:
                return cached[1]
        discovery = self._fetch_discovery(url)
        if ttl > 0:
            with _payer_lock:
                if len(_discoveries) >= _MAX_CACHED_DISCOVERIES:
                    _discoveries.clear()
                _discoveries[url] = (now + ttl, discovery)
        return discovery

    def _fetch_discovery(self, url: str) -> Discovery:
        response = self._call("GET", url, step="discover")
        payload = parse_json(response, what="discovery", request_id=self.request_id)
        if isinstance(payload, dict) and "orchestrators" in payload:
            payload = payload["orchestrators"]
        if payload is None:
            payload = []
        try:
            return Discovery.model_validate({"orchestrators": payload})
        except ValidationError as exc:
            raise LivepeerProtocolError(
                f"livepeer signer GET {url_path(url)}: unexpected discovery body"
                f" ({exc.error_count()} errors)",
                status=response.status_code,
                request_id=self.request_id,
            ) from exc

    def payer_address(self) -> str:
        """The signer's payer address (``sign-orchestrator-info``), cached per signer URL."""
        key = self.credentials.signer_url.rstrip("/")
        now = time.monotonic()
        with _payer_lock:
            cached = _payer_addresses.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        url = self.url("sign-orchestrator-info")
        response = self._call("POST", url, step="signer-info", json={})
        payload = parse_json(response, what="sign-orchestrator-info", request_id=self.request_id)
        try:
            info = SignerInfo.model_validate(payload)
        except ValidationError as exc:
            raise LivepeerProtocolError(
                f"livepeer signer POST {url_path(url)}: no address in the response",
                status=response.status_code,
                request_id=self.request_id,
            ) from exc
        with _payer_lock:
            _payer_addresses[key] = (info.address, now + PAYER_ADDRESS_TTL_SECONDS)
        return info.address

    def _call(self, method: str, url: str, *, step: str, json: Any = None) -> requests.Response:
        """An unpaid signer call: transport failures are retryable, non-200 is mapped."""
        try:
            response = send(
                self.http,
                method,
                url,
                step=step,
                request_id=self.request_id,
                headers=self.auth_headers(),
                json=json,
                timeout=self.config.signer_timeout,
                max_body=self.config.max_response_bytes,
            )
        except requests.RequestException as exc:
            raise LivepeerUnavailableError(
                describe(
                    upstream="signer",
                    method=method,
                    path=url_path(url),
                    status=None,
                    detail=transport_failure(exc),
                ),
                request_id=self.request_id,
            ) from exc
        if response.status_code != 200:
            raise self._error(response, method, url)
        return response

    def _error(self, response: requests.Response, method: str, url: str) -> LivepeerError:
        return error_for_status(
            response,
            upstream="signer",
            method=method,
            path=url_path(url),
            request_id=self.request_id,
        )
