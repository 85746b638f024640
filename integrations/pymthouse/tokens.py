"""The machine token, cached in the shared Django cache and fetched once across processes.

Protocol (every web and worker process runs the same code against one cache):

1. A cached token is used while ``now < expires_at - skew``.
2. Otherwise the process tries ``cache.add(lock_key)``. ``add`` is atomic on Redis and on
   the database cache, so exactly one process wins and fetches.
3. The others poll the cache for a bounded time (the lock's lifetime) and use the token
   the winner stored. If the winner dies or fails, its lock expires or is released and a
   poller takes it over; if the wait runs out, the poller fetches by itself (bounded wait
   beats a stampede-proof deadlock).

A token whose response lacked ``expires_in`` is cached for ``DEFAULT_TTL_SECONDS`` with
no skew (we cannot know its real lifetime; an early expiry is caught by the 401 flush).
When ``expires_in`` is shorter than twice the skew, half the lifetime is used as skew.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

from integrations.pymthouse.types import MachineToken, SecretToken

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 60
POLL_INTERVAL_SECONDS = 0.05


def cache_ttl(token: MachineToken, *, skew_seconds: int, now: float) -> int:
    """Seconds the token may stay in the cache (0 = do not cache)."""
    remaining = token.expires_at - now
    if token.expires_in is None:
        return max(0, int(remaining))
    skew = min(skew_seconds, token.expires_in // 2)
    return max(0, int(remaining - skew))


class MachineTokenCache:
    """Shared-cache holder of one machine token (keyed by issuer, client and secret)."""

    def __init__(
        self,
        *,
        fingerprint: str,
        fetch: Callable[[], MachineToken],
        skew_seconds: int,
        lock_seconds: float,
    ) -> None:
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
        self.key = f"pymthouse:machine-token:{digest}"
        self.lock_key = f"{self.key}:lock"
        self._fetch = fetch
        self._skew_seconds = skew_seconds
        self._lock_seconds = max(1.0, lock_seconds)

    def get(self) -> MachineToken:
        cached = self._cached()
        if cached is not None:
            return cached
        deadline = time.monotonic() + self._lock_seconds
        while True:
            owner = uuid.uuid4().hex
            if cache.add(self.lock_key, owner, timeout=int(self._lock_seconds) + 1):
                try:
                    # Another process may have stored a token between our read and add.
                    cached = self._cached()
                    return cached if cached is not None else self._fetch_and_store()
                finally:
                    self._release(owner)
            if time.monotonic() >= deadline:
                logger.warning("pymthouse machine-token lock wait timed out; fetching directly")
                return self._fetch_and_store()
            time.sleep(POLL_INTERVAL_SECONDS)
            cached = self._cached()
            if cached is not None:
                return cached

    def invalidate(self, stale: MachineToken) -> None:
        """Drop ``stale`` from the cache, unless another process already replaced it."""
        value = cache.get(self.key)
        if isinstance(value, dict) and value.get("access_token") == stale.access_token.reveal():
            cache.delete(self.key)
            logger.info("pymthouse machine token flushed after an upstream 401")

    def _cached(self) -> MachineToken | None:
        value = cache.get(self.key)
        if not isinstance(value, dict):
            return None
        try:
            token = _from_cache_value(value)
        except (KeyError, TypeError, ValueError):
            cache.delete(self.key)
            return None
        if cache_ttl(token, skew_seconds=self._skew_seconds, now=time.time()) <= 0:
            return None
        return token

    def _fetch_and_store(self) -> MachineToken:
        token = self._fetch()
        ttl = cache_ttl(token, skew_seconds=self._skew_seconds, now=time.time())
        if ttl > 0:
            cache.set(self.key, _to_cache_value(token), timeout=ttl)
        return token

    def _release(self, owner: str) -> None:
        # Not atomic (get then delete), but the lock only guards against a stampede; the
        # worst case of a race is one extra fetch, never a wrong token.
        if cache.get(self.lock_key) == owner:
            cache.delete(self.lock_key)


def _to_cache_value(token: MachineToken) -> dict[str, Any]:
    # Plain data, not a pickled SecretToken: survives deploys that move our classes.
    return {
        "access_token": token.access_token.reveal(),
        "token_type": token.token_type,
        "scope": list(token.scope),
        "expires_in": token.expires_in,
        "expires_at": token.expires_at,
    }


def _from_cache_value(value: dict[str, Any]) -> MachineToken:
    expires_in = value["expires_in"]
    return MachineToken(
        access_token=SecretToken(value["access_token"]),
        token_type=str(value["token_type"]),
        scope=tuple(str(item) for item in value["scope"]),
        expires_in=None if expires_in is None else int(expires_in),
        expires_at=float(value["expires_at"]),
    )
