"""The Redis cache, degraded instead of failing when Redis is unreachable.

Nothing that must be exact lives in the cache (admission counters, observed prices and
holds are database rows), so a Redis outage must not turn sign-in or a bearer API call
into a 500: with Redis down, a read is a miss, a write is dropped, and ``add`` succeeds
(allauth's rate-limit lock is then held by nobody; its rate limits fail open for the
outage, as they would after a cache flush). Each outage is logged once at WARNING when
it starts and once when Redis answers again. The OIDC discovery and JWKS documents keep
an in-process copy (``integrations.oidc.discovery``), so bearer tokens still verify without
fetching the JWKS on every request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ResilientRedisCache(RedisCache):
    """``RedisCache`` whose operations degrade (miss / no-op) while Redis is unreachable."""

    _down = False
    _state_lock = threading.Lock()

    def _degraded(self, operation: str, call: Callable[[], T], fallback: T) -> T:
        try:
            result = call()
        except RedisError as exc:
            with self._state_lock:
                if not ResilientRedisCache._down:
                    ResilientRedisCache._down = True
                    logger.warning(
                        "cache: Redis unreachable (%s on %s); degrading to misses",
                        type(exc).__name__,
                        operation,
                    )
            return fallback
        if ResilientRedisCache._down:
            with self._state_lock:
                if ResilientRedisCache._down:
                    ResilientRedisCache._down = False
                    logger.warning("cache: Redis answers again")
        return result

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self._degraded("add", lambda: super(ResilientRedisCache, self).add(
            key, value, timeout, version), True)  # fmt: skip

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        """With Redis down, every count is the first (a rate limit fails open)."""
        return self._degraded(
            "incr", lambda: super(ResilientRedisCache, self).incr(key, delta, version), delta
        )

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._degraded(
            "get", lambda: super(ResilientRedisCache, self).get(key, default, version), default
        )

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        self._degraded("set", lambda: super(ResilientRedisCache, self).set(
            key, value, timeout, version), None)  # fmt: skip

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._degraded(
            "touch", lambda: super(ResilientRedisCache, self).touch(key, timeout, version), False
        )

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._degraded(
            "delete", lambda: super(ResilientRedisCache, self).delete(key, version), False
        )

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        return self._degraded(
            "get_many", lambda: super(ResilientRedisCache, self).get_many(keys, version), {}
        )

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._degraded(
            "has_key", lambda: super(ResilientRedisCache, self).has_key(key, version), False
        )

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        return self._degraded(
            "set_many",
            lambda: super(ResilientRedisCache, self).set_many(data, timeout, version),
            list(data),
        )

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._degraded(
            "delete_many", lambda: super(ResilientRedisCache, self).delete_many(keys, version), None
        )
