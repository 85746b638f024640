"""Turning image URLs from runners and gateways into checked bytes.

* ``data:`` URLs (a runner called directly) are base64-decoded;
* relative URLs (a go-livepeer gateway's ``/stream/<id>/<file>.png``) are resolved
  against the URL of the response that carried them;
* absolute http(s) URLs (object stores) are downloaded without credentials, bounded in
  time and size, following at most a few http(s) redirects; every hop is refused when
  it resolves to a non-public address (``addresses.py``);
* the bytes must start with PNG or JPEG magic (``content_type`` is taken from them)
  and carry exactly the requested dimensions;
* only the image we keep (the first) is decoded or downloaded.

Downloads are GETs and spend nothing, so transient failures are retried here.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import requests

from integrations.livepeer.addresses import check_url
from integrations.livepeer.errors import (
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    parse_retry_after,
)
from integrations.livepeer.imageformat import image_dimensions, sniff_content_type
from integrations.livepeer.session import LivepeerSession, send, transport_failure, url_path
from integrations.livepeer.types import GeneratedImage

if TYPE_CHECKING:
    from integrations.livepeer.schemas import ImageItem, ImagesResponse

logger = logging.getLogger(__name__)

HTTP_SCHEMES = frozenset({"http", "https"})
MAX_REDIRECTS = 3
DOWNLOAD_ATTEMPTS = 3
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_BACKOFF_SECONDS = 0.25
MAX_RETRY_SLEEP_SECONDS = 5.0
CHUNK_BYTES = 64 * 1024


def checked_content_type(content: bytes, *, request_id: str, source: str) -> str:
    content_type = sniff_content_type(content)
    if content_type is None:
        raise LivepeerProtocolError(
            f"livepeer image from {source} is neither PNG nor JPEG", request_id=request_id
        )
    return content_type


def decode_data_url(url: str, *, max_bytes: int, request_id: str) -> bytes:
    """The bytes of a base64 ``data:`` URL, bounded by ``max_bytes``."""
    header, separator, payload = url[len("data:") :].partition(",")
    if not separator or not header.lower().endswith(";base64"):
        raise LivepeerProtocolError(
            "livepeer image data URL is not base64-encoded", request_id=request_id
        )
    payload = "".join(payload.split())
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise LivepeerProtocolError(
            f"livepeer image data URL exceeds {max_bytes} bytes", request_id=request_id
        )
    try:
        content = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LivepeerProtocolError(
            "livepeer image data URL has invalid base64", request_id=request_id
        ) from exc
    if len(content) > max_bytes:
        raise LivepeerProtocolError(
            f"livepeer image data URL exceeds {max_bytes} bytes", request_id=request_id
        )
    return content


class ImageFetcher:
    """Fetches the images of one response (``base_url`` = the URL that returned them)."""

    def __init__(
        self,
        *,
        http: LivepeerSession,
        request_id: str,
        timeout: tuple[float, float],
        max_bytes: int,
        allow_private: bool,
        expected_size: tuple[int, int],
    ) -> None:
        self.http = http
        self.request_id = request_id
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.expected_size = expected_size

    def fetch(self, item: ImageItem, *, base_url: str) -> tuple[bytes, str]:
        """``(content, content_type)`` of one image."""
        url = item.url.strip()
        if url[:5].lower() == "data:":
            content = decode_data_url(url, max_bytes=self.max_bytes, request_id=self.request_id)
            return content, checked_content_type(
                content, request_id=self.request_id, source="a data URL"
            )
        absolute = urljoin(base_url, url)
        content = self._download(absolute)
        return content, checked_content_type(
            content, request_id=self.request_id, source=url_path(absolute)
        )

    def _download(self, url: str) -> bytes:
        for _redirect in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme.lower() not in HTTP_SCHEMES or not parts.netloc:
                raise LivepeerProtocolError(
                    f"livepeer image URL has scheme {parts.scheme!r}; only http(s) is fetched",
                    request_id=self.request_id,
                )
            check_url(
                url, allow_private=self.allow_private, what="image", request_id=self.request_id
            )
            location = self._download_once(url)
            if isinstance(location, bytes):
                return location
            url = location
        raise LivepeerPaidCallFailedError(
            f"livepeer image download: more than {MAX_REDIRECTS} redirects",
            request_id=self.request_id,
        )

    def _download_once(self, url: str) -> bytes | str:
        """The image bytes, or the redirect target. Retries transient failures."""
        path = url_path(url)
        last_problem = "no attempt made"
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            if attempt > 1:
                time.sleep(RETRY_BACKOFF_SECONDS * (attempt - 1))
            try:
                response = send(
                    self.http,
                    "GET",
                    url,
                    step="image",
                    request_id=self.request_id,
                    timeout=self.timeout,
                    stream=True,
                    headers={"Accept": "image/png, image/jpeg, image/*"},
                )
            except requests.RequestException as exc:
                last_problem = transport_failure(exc)
                continue
            try:
                status = response.status_code
                if status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                    return urljoin(url, response.headers["Location"])
                if status in RETRY_STATUSES:
                    last_problem = f"HTTP {status}"
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if retry_after and attempt < DOWNLOAD_ATTEMPTS:
                        time.sleep(min(retry_after, MAX_RETRY_SLEEP_SECONDS))
                    continue
                if status != 200:
                    raise LivepeerPaidCallFailedError(
                        f"livepeer image GET {path}: HTTP {status}",
                        status=status,
                        request_id=self.request_id,
                    )
                return self._read_image_body(response, path)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                last_problem = transport_failure(exc)
                continue
            finally:
                response.close()
        raise LivepeerPaidCallFailedError(
            f"livepeer image GET {path}: {last_problem} after {DOWNLOAD_ATTEMPTS} attempts",
            request_id=self.request_id,
        )

    def _read_image_body(self, response: requests.Response, path: str) -> bytes:
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if not content_type.startswith("image/"):
            raise LivepeerProtocolError(
                f"livepeer image GET {path}: Content-Type {content_type or 'missing'!r}"
                " is not image/*",
                request_id=self.request_id,
            )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise LivepeerProtocolError(
                f"livepeer image GET {path}: {declared} bytes exceeds {self.max_bytes}",
                request_id=self.request_id,
            )
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            total += len(chunk)
            if total > self.max_bytes:
                raise LivepeerProtocolError(
                    f"livepeer image GET {path}: body exceeds {self.max_bytes} bytes",
                    request_id=self.request_id,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def check_dimensions(self, content: bytes, *, source: str) -> None:
        """The image must be exactly the size we asked (and paid) for."""
        size = image_dimensions(content)
        if size != self.expected_size:
            got = "unreadable" if size is None else f"{size[0]}x{size[1]}"
            want = f"{self.expected_size[0]}x{self.expected_size[1]}"
            raise LivepeerProtocolError(
                f"livepeer image from {source} is {got}, not the requested {want}",
                request_id=self.request_id,
            )

    def fetch_first(self, parsed: ImagesResponse, *, base_url: str) -> tuple[GeneratedImage, ...]:
        """The first image of a response (the only one we keep), checked, or raise.

        Further images are neither decoded nor downloaded.
        """
        if not parsed.images:
            raise LivepeerPaidCallFailedError(
                "livepeer response carried no images", request_id=self.request_id
            )
        item = parsed.images[0]
        content, content_type = self.fetch(item, base_url=base_url)
        self.check_dimensions(content, source="the runner")
        nsfw = item.nsfw
        if parsed.has_nsfw_concepts:
            nsfw = nsfw or parsed.has_nsfw_concepts[0]
        seed = item.seed if item.seed is not None else parsed.seed
        return (GeneratedImage(content=content, content_type=content_type, seed=seed, nsfw=nsfw),)
