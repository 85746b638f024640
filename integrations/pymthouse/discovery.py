"""OIDC discovery: where the token endpoint and JWKS live (never hard-coded).

pymthouse serves two documents (docs/upstream.md §P2): the issuer-relative one
from node-oidc-provider (what the official SDK fetches, tried first) and a hand-written
one at the origin root (the fallback). Both must name our configured issuer exactly
(OIDC Discovery §4.3); anything else is a configuration error, never a fallback trigger.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import urlsplit

from django.core.cache import cache

from integrations.pymthouse.config import PymthouseConfig
from integrations.pymthouse.errors import PymthouseConfigurationError, PymthouseError
from integrations.pymthouse.transport import Transport, parse_model
from integrations.pymthouse.types import ProviderMetadata

logger = logging.getLogger(__name__)

WELL_KNOWN_PATH = "/.well-known/openid-configuration"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Discovery:
    def __init__(self, *, config: PymthouseConfig, transport: Transport) -> None:
        self._config = config
        self._transport = transport
        digest = hashlib.sha256(config.issuer.encode()).hexdigest()[:32]
        self.cache_key = f"pymthouse:oidc-discovery:{digest}"

    def metadata(self) -> ProviderMetadata:
        """The issuer's metadata, from the shared cache or fetched (then cached)."""
        cached = cache.get(self.cache_key)
        if isinstance(cached, dict):
            try:
                return self._checked(ProviderMetadata.model_validate(cached))
            except (ValueError, PymthouseConfigurationError):
                cache.delete(self.cache_key)
        metadata = self._fetch()
        if self._config.discovery_cache_seconds > 0:
            cache.set(
                self.cache_key,
                metadata.as_cache_value(),
                timeout=self._config.discovery_cache_seconds,
            )
        return metadata

    def _fetch(self) -> ProviderMetadata:
        issuer_url = self._config.issuer + WELL_KNOWN_PATH
        root_url = self._config.base_url + WELL_KNOWN_PATH
        try:
            return self._fetch_one(issuer_url)
        except PymthouseConfigurationError:
            raise
        except PymthouseError as exc:
            # Missing or malformed issuer document: try the root one. A timeout or 5xx
            # would only cost a second wait on the same origin, so it propagates.
            if exc.retryable or issuer_url == root_url:
                raise
            logger.info(
                "pymthouse issuer discovery unusable (%s); falling back to %s",
                exc.status or type(exc).__name__,
                WELL_KNOWN_PATH,
            )
            return self._fetch_one(root_url)

    def _fetch_one(self, url: str) -> ProviderMetadata:
        _, payload = self._transport.request_json("GET", url)
        metadata = parse_model(ProviderMetadata, payload, method="GET", path=urlsplit(url).path)
        return self._checked(metadata)

    def _checked(self, metadata: ProviderMetadata) -> ProviderMetadata:
        if metadata.issuer != self._config.issuer:
            raise PymthouseConfigurationError(
                f"pymthouse discovery issuer mismatch: configured {self._config.issuer!r}, "
                f"document says {metadata.issuer!r}; check PYMTHOUSE_ISSUER",
                code="issuer_mismatch",
            )
        # We send the client secret to token_endpoint: it must be the issuer's own origin.
        issuer_origin = _origin(self._config.issuer)
        for name, url in (
            ("token_endpoint", metadata.token_endpoint),
            ("jwks_uri", metadata.jwks_uri),
        ):
            if _origin(url) != issuer_origin:
                raise PymthouseConfigurationError(
                    f"pymthouse discovery {name} is not on the issuer's origin",
                    code="endpoint_origin_mismatch",
                )
        return metadata
