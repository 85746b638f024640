"""Image URLs in runner results: data URLs, absolute and relative URLs, and their limits.

The runner's paid answer is replaced through a sandbox fault (the challenge passes
through untouched), so the signer still issues a real ticket and every failure here
happens after money was spent: the guard must show [claim, confirm] and nothing is
bought twice.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from integrations.livepeer import (
    GatewayCredentials,
    LivepeerPaidCallFailedError,
    LivepeerProtocolError,
    SignerCredentials,
    get_backend,
)
from integrations.livepeer.imageformat import image_dimensions, sniff_content_type
from tests.helpers import png_size
from tests.integrations.livepeer.conftest import (
    PAYMENT_PATH,
    RUNNER_1,
    RecordingGuard,
    calls,
    image_request,
)
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db


def runner_answers(sandbox: SandboxControl, body: Any) -> None:
    """The challenge passes through; the paid call gets ``body`` with status 200."""
    sandbox.add_fault("POST", RUNNER_1, delay=0.001, times=1)
    sandbox.add_fault("POST", RUNNER_1, status=200, body=body, times=1)


def live(credentials: SignerCredentials, guard: RecordingGuard) -> Any:
    return get_backend("live-runner").generate(
        image_request(), credentials=credentials, guard=guard
    )


def assert_paid_once(sandbox: SandboxControl, guard: RecordingGuard) -> None:
    assert guard.calls == ["claim", "confirm"]
    assert len(calls(sandbox, PAYMENT_PATH)) == 1
    assert len([e for e in sandbox.events() if e["source"] == "signer"]) == 1


@pytest.fixture
def stream_url(
    sandbox: SandboxControl, gateway_credentials: GatewayCredentials
) -> tuple[str, bytes]:
    """An absolute URL of a real PNG held by the sandbox gateway, and its bytes."""
    result = get_backend("ai-gateway").generate(
        image_request(),  # 640x384, the size the live-runner tests ask for
        credentials=gateway_credentials,
        guard=RecordingGuard(),
    )
    path = next(r["path"] for r in sandbox.requests("/stream/") if r["path"].startswith("/stream/"))
    sandbox.clear_requests()
    return f"{sandbox.url}{path}", result.images[0].content


def test_absolute_url_is_downloaded_without_credentials(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    stream_url: tuple[str, bytes],
    guard: RecordingGuard,
) -> None:
    url, content = stream_url
    runner_answers(sandbox, {"images": [{"url": url, "seed": 7, "nsfw": True}]})

    result = live(signer_credentials, guard)

    assert result.images[0].content == content
    assert png_size(result.images[0].content) == (640, 384)
    assert result.images[0].seed == 7
    assert result.images[0].nsfw is True
    assert_paid_once(sandbox, guard)
    gets = [r for r in sandbox.requests("/stream/") if r["method"] == "GET"]
    assert [(r["status"], r["auth"]) for r in gets] == [(200, None)]


def test_only_the_image_we_keep_is_downloaded(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    stream_url: tuple[str, bytes],
    guard: RecordingGuard,
) -> None:
    url, content = stream_url
    runner_answers(
        sandbox, {"images": [{"url": url}, {"url": f"{sandbox.url}/second.png"}, {"url": url}]}
    )

    result = live(signer_credentials, guard)

    assert [image.content for image in result.images] == [content]
    image_gets = [
        r["path"]
        for r in sandbox.requests()
        if r["path"] != "/signer/discover-orchestrators" and r["method"] == "GET"
    ]
    assert image_gets == [url.removeprefix(sandbox.url)]
    assert_paid_once(sandbox, guard)


def test_redirect_to_a_metadata_address_is_refused_on_the_hop(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "GET", "/moved.png", status=302, headers={"Location": "http://169.254.169.254/img.png"}
    )
    runner_answers(sandbox, {"images": [{"url": f"{sandbox.url}/moved.png"}]})

    with pytest.raises(LivepeerProtocolError, match="169.254.169.254 refused"):
        live(signer_credentials, guard)

    image_gets = [
        r["path"]
        for r in sandbox.requests()
        if r["path"] != "/signer/discover-orchestrators" and r["method"] == "GET"
    ]
    assert image_gets == ["/moved.png"]
    assert_paid_once(sandbox, guard)


def test_relative_url_is_resolved_against_the_runner(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    stream_url: tuple[str, bytes],
    guard: RecordingGuard,
) -> None:
    url, content = stream_url
    path = url.removeprefix(sandbox.url)
    runner_answers(sandbox, {"images": [{"url": path, "seed": 7}]})

    result = live(signer_credentials, guard)

    assert result.images[0].content == content
    assert_paid_once(sandbox, guard)


def test_http_redirect_is_followed(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    stream_url: tuple[str, bytes],
    guard: RecordingGuard,
) -> None:
    url, content = stream_url
    sandbox.add_fault("GET", "/moved.png", status=302, headers={"Location": url})
    runner_answers(sandbox, {"images": [{"url": f"{sandbox.url}/moved.png"}]})

    result = live(signer_credentials, guard)

    assert result.images[0].content == content
    assert_paid_once(sandbox, guard)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.png"])
def test_redirect_to_a_non_http_scheme_is_refused(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    target: str,
) -> None:
    sandbox.add_fault("GET", "/moved.png", status=302, headers={"Location": target})
    runner_answers(sandbox, {"images": [{"url": f"{sandbox.url}/moved.png"}]})

    with pytest.raises(LivepeerProtocolError, match="only http"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)"])
def test_non_http_image_urls_are_refused(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard, url: str
) -> None:
    runner_answers(sandbox, {"images": [{"url": url}]})

    with pytest.raises(LivepeerProtocolError, match="only http"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_download_that_is_not_an_image_content_type_is_refused(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault("GET", "/page.png", status=200, body="<html>login</html>")
    runner_answers(sandbox, {"images": [{"url": f"{sandbox.url}/page.png"}]})

    with pytest.raises(LivepeerProtocolError, match="is not image/"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_image_content_type_with_wrong_magic_is_refused(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    sandbox.add_fault(
        "GET", "/fake.gif", status=200, body="GIF89a....", headers={"Content-Type": "image/gif"}
    )
    runner_answers(sandbox, {"images": [{"url": f"{sandbox.url}/fake.gif"}]})

    with pytest.raises(LivepeerProtocolError, match="neither PNG nor JPEG"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_download_above_the_size_limit_is_refused(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    stream_url: tuple[str, bytes],
    guard: RecordingGuard,
    settings: Any,
) -> None:
    url, content = stream_url
    settings.LIVEPEER_MAX_IMAGE_BYTES = len(content) - 1
    runner_answers(sandbox, {"images": [{"url": url}]})

    with pytest.raises(LivepeerProtocolError, match="exceeds"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_data_url_above_the_size_limit_is_refused(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    settings: Any,
) -> None:
    settings.LIVEPEER_MAX_IMAGE_BYTES = 1000

    with pytest.raises(LivepeerProtocolError, match="exceeds 1000 bytes"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,!!!not-base64!!!", "invalid base64"),
        ("data:image/png,%89PNG", "not base64-encoded"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "neither PNG"),
    ],
)
def test_bad_data_urls_are_refused(
    sandbox: SandboxControl,
    signer_credentials: SignerCredentials,
    guard: RecordingGuard,
    url: str,
    message: str,
) -> None:
    runner_answers(sandbox, {"images": [{"url": url}]})

    with pytest.raises(LivepeerProtocolError, match=message):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_result_without_images_fails_the_paid_call(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    runner_answers(sandbox, {"images": []})

    with pytest.raises(LivepeerPaidCallFailedError, match="no images"):
        live(signer_credentials, guard)
    assert_paid_once(sandbox, guard)


def test_jpeg_data_url_is_accepted_with_its_dimensions(
    sandbox: SandboxControl, signer_credentials: SignerCredentials, guard: RecordingGuard
) -> None:
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        + b"\xff\xc0"
        + struct.pack(">HBHHB", 11, 8, 384, 640, 1)
        + b"\x01\x11\x00"
        + b"\xff\xd9"
    )
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    runner_answers(sandbox, {"images": [{"url": url, "seed": 3}]})

    result = live(signer_credentials, guard)

    assert result.images[0].content == jpeg
    assert result.images[0].content_type == "image/jpeg"
    assert result.images[0].dimensions == (640, 384)
    assert_paid_once(sandbox, guard)


def test_format_helpers_on_unknown_bytes() -> None:
    assert sniff_content_type(b"GIF89a") is None
    assert image_dimensions(b"GIF89a") is None
    assert image_dimensions(b"\x89PNG\r\n\x1a\n") is None
