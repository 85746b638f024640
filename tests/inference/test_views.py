"""The server-rendered pages: generate (no-JS path), gallery, detail, image, delete."""

from __future__ import annotations

import struct
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from inference.models import Generation, GenerationStatus
from inference.templatetags.inference_extras import duration, exact_intcomma, usd_micros

pytestmark = pytest.mark.django_db

GENERATE_URL = "/generate/"
GALLERY_URL = "/gallery/"


def _png(width: int = 3, height: int = 2) -> bytes:
    """A small valid RGB PNG, built without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + bytes([200, 40, 90]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def make_user(django_capture_on_commit_callbacks):
    def make(email: str) -> User:
        with django_capture_on_commit_callbacks():  # no provisioning call in these tests
            return User.objects.create_user(email=email, password="pw-test-12345")

    return make


@pytest.fixture
def alice(make_user) -> User:
    return make_user("alice@example.com")


@pytest.fixture
def bob(make_user) -> User:
    return make_user("bob@example.com")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob: User) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def _generation(owner: User, **fields) -> Generation:
    defaults = {
        "prompt": "a lighthouse at dusk",
        "model_id": "ByteDance/SDXL-Lightning",
        "width": 512,
        "height": 384,
    }
    return Generation.objects.create(owner=owner, **{**defaults, **fields})


@pytest.fixture
def image_files():
    """Files written by a test, removed afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def _succeeded(owner: User, image_files: list[Path], content: bytes, **fields) -> Generation:
    generation = _generation(
        owner,
        status=GenerationStatus.SUCCEEDED,
        stage="done",
        image_seed=1234,
        finished_at=timezone.now(),
        **fields,
    )
    generation.image.save(f"{generation.pk}.png", ContentFile(content), save=True)
    image_files.append(Path(generation.image.path))
    return generation


# --- access ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        GENERATE_URL,
        GALLERY_URL,
        "/generations/7d9a52a4-3f6e-4d0b-9b43-0f4d6b2f1a11/",
        "/generations/7d9a52a4-3f6e-4d0b-9b43-0f4d6b2f1a11/image",
    ],
)
def test_pages_require_login(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_delete_requires_login_and_deletes_nothing(client: Client, alice: User) -> None:
    generation = _generation(alice)

    response = client.post(f"/generations/{generation.pk}/delete/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Generation.objects.filter(pk=generation.pk).exists()


def test_url_names() -> None:
    generation_id = uuid.UUID("7d9a52a4-3f6e-4d0b-9b43-0f4d6b2f1a11")
    assert reverse("inference:generate") == "/generate/"
    assert reverse("inference:gallery") == "/gallery/"
    assert reverse("inference:detail", args=[generation_id]) == f"/generations/{generation_id}/"
    assert reverse("inference:image", args=[generation_id]) == f"/generations/{generation_id}/image"
    assert (
        reverse("inference:delete", args=[generation_id]) == f"/generations/{generation_id}/delete/"
    )


# --- generate page ----------------------------------------------------------------


def test_generate_page_lists_models_presets_and_recent(
    alice_client: Client, alice: User, bob: User
) -> None:
    for index in range(8):
        _generation(alice, prompt=f"alice prompt {index}")
    _generation(bob, prompt="bob secret prompt")

    response = alice_client.get(GENERATE_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert '<option value="ByteDance/SDXL-Lightning" selected>' in html
    assert '<option value="black-forest-labs/FLUX.1-schnell">' in html
    for label, width, height in [
        ("Square", 1024, 1024),
        ("Square (small)", 512, 512),
        ("Landscape 16:9", 1024, 576),
        ("Portrait 9:16", 576, 1024),
        ("Landscape 4:3", 1024, 768),
        ("Portrait 3:4", 768, 1024),
    ]:
        assert f'value="{width}x{height}"' in html
        assert f'<span class="chip-label">{label}</span>' in html
        assert f'<span class="chip-dims">{width}×{height}</span>' in html
    assert 'name="size" value="1024x1024" data-width="1024" data-height="1024" checked' in html
    assert [g.prompt for g in response.context["recent_generations"]] == [
        f"alice prompt {index}" for index in range(7, 1, -1)
    ]
    assert "bob secret prompt" not in html
    assert 'data-api-url="/api/v1/generations"' in html
    assert "/static/js/generate.js" in html
    assert 'id="generation-stages"' in html
    assert (
        '{"value": "paying", "label": "Paying the runner\\u2026", "progress": 45}' in html
    )  # the stage table comes from GenerationStage, not a copy in the JavaScript
    assert 'aria-live="polite"' in html
    assert 'href="/gallery/"' in html  # nav


def test_generate_page_prefills_from_query(alice_client: Client) -> None:
    response = alice_client.get(
        GENERATE_URL,
        {
            "prompt": "a red fox",
            "negative_prompt": "blurry",
            "model_id": "black-forest-labs/FLUX.1-schnell",
            "width": 640,
            "height": 640,
            "seed": 42,
        },
    )

    html = response.content.decode()
    assert ">a red fox</textarea>" in html
    assert ">blurry</textarea>" in html
    assert '<option value="black-forest-labs/FLUX.1-schnell" selected>' in html
    assert 'value="42"' in html
    # 640x640 is not a preset: offered as its own chip, checked.
    assert 'name="size" value="640x640" data-width="640" data-height="640" checked' in html
    assert '<details class="advanced" open>' in html


def test_post_creates_redirects_and_enqueues_exactly_once(
    alice_client: Client, alice: User, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(
            GENERATE_URL,
            {
                "prompt": "  a red fox in snow  ",
                "negative_prompt": "blurry",
                "model_id": "black-forest-labs/FLUX.1-schnell",
                "size": "1024x576",
                "seed": "42",
            },
        )

    generation = Generation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/generations/{generation.pk}/"
    assert len(callbacks) == 1
    assert generation.owner_id == alice.pk
    assert generation.prompt == "a red fox in snow"
    assert generation.negative_prompt == "blurry"
    assert generation.model_id == "black-forest-labs/FLUX.1-schnell"
    assert (generation.width, generation.height, generation.seed) == (1024, 576, 42)
    assert generation.status == GenerationStatus.QUEUED


def test_post_without_seed_or_model_uses_defaults(
    alice_client: Client, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(GENERATE_URL, {"prompt": "a fox", "size": "512x512"})

    generation = Generation.objects.get()
    assert response.status_code == 302
    assert len(callbacks) == 1
    assert generation.model_id == "ByteDance/SDXL-Lightning"
    assert generation.seed is None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"prompt": "   "}, "prompt", "Describe the image you want."),
        ({"prompt": "x" * 1001}, "prompt", "Keep the prompt under 1000 characters."),
        (
            {"negative_prompt": "x" * 1001},
            "negative_prompt",
            "Keep the negative prompt under 1000 characters.",
        ),
        ({"model_id": "evil/model"}, "model_id", "Choose one of the available models."),
        ({"size": ""}, "size", "Choose an image size."),
        ({"size": "big"}, "size", "Choose an image size."),
        ({"size": "500x512"}, "size", "Width must be a multiple of 8 between 256 and 1536."),
        ({"size": "512x4096"}, "size", "Height must be a multiple of 8 between 256 and 1536."),
        ({"seed": "abc"}, "seed", "Seed must be a whole number between 0 and 4294967295."),
        ({"seed": "-1"}, "seed", "Seed must be a whole number between 0 and 4294967295."),
        ({"seed": "4294967296"}, "seed", "Seed must be a whole number between 0 and 4294967295."),
    ],
)
def test_post_validation_errors_rerender_with_exact_messages(
    alice_client: Client, django_capture_on_commit_callbacks, data, field, message
) -> None:
    payload = {"prompt": "a fox", "size": "512x512", **data}
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(GENERATE_URL, payload)

    assert response.status_code == 400
    assert response.context["form"].errors == {field: [message]}
    html = response.content.decode()
    assert f'<ul class="errorlist" id="{field}-error" data-error-for="{field}"><li>' in html
    assert [str(m) for m in response.context["messages"]] == [
        "Please correct the highlighted fields."
    ]
    assert Generation.objects.count() == 0
    assert callbacks == []


def test_post_keeps_what_the_user_typed_on_error(alice_client: Client) -> None:
    response = alice_client.post(
        GENERATE_URL,
        {"prompt": "a fox", "negative_prompt": "fog", "size": "576x1024", "seed": "nope"},
    )

    html = response.content.decode()
    assert ">a fox</textarea>" in html
    assert ">fog</textarea>" in html
    assert 'name="size" value="576x1024" data-width="576" data-height="1024" checked' in html
    assert 'value="nope"' in html
    assert 'id="id_seed" autocomplete="off"' in html
    assert 'data-invalid-message="Seed must be a whole number between 0 and 4294967295."' in html
    assert html.count('aria-invalid="true"') == 1  # only the seed


def test_post_rate_limited_is_a_429_with_message(
    alice_client: Client, alice: User, settings, django_capture_on_commit_callbacks
) -> None:
    settings.INFERENCE_MAX_ACTIVE_PER_USER = 1
    _generation(alice, status=GenerationStatus.RUNNING)

    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(GENERATE_URL, {"prompt": "a fox", "size": "512x512"})

    assert response.status_code == 429
    assert response["Retry-After"] == "5"
    assert [str(m) for m in response.context["messages"]] == [
        "You already have images in progress. Wait for one to finish. "
        "You can try again in 5 seconds."
    ]
    assert ">a fox</textarea>" in response.content.decode()
    assert Generation.objects.count() == 1
    assert callbacks == []


def test_post_refused_by_admission_is_a_402_with_its_message(
    alice_client: Client, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    from inference.errors import GenerationAdmissionRefusedError
    from inference.services import admission

    def refuse(*, generation: Generation) -> None:
        raise GenerationAdmissionRefusedError(
            "You're out of credit. Add funds to keep generating images.", code="insufficient_credit"
        )

    monkeypatch.setattr(admission, "generation_admit_step", refuse)  # billing's hook point
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice_client.post(GENERATE_URL, {"prompt": "a fox", "size": "512x512"})

    assert response.status_code == 402
    assert [str(m) for m in response.context["messages"]] == [
        "You're out of credit. Add funds to keep generating images."
    ]
    assert ">a fox</textarea>" in response.content.decode()
    assert not Generation.objects.exists()
    assert callbacks == []


# --- gallery ------------------------------------------------------------------------


def test_gallery_is_paginated_newest_first_and_owner_scoped(
    alice_client: Client, alice: User, bob: User
) -> None:
    start = timezone.now() - timedelta(days=1)
    created = []
    for index in range(30):
        generation = _generation(alice, prompt=f"alice {index:02d}")
        Generation.objects.filter(pk=generation.pk).update(
            created_at=start + timedelta(minutes=index)
        )
        created.append(generation.pk)
    _generation(bob, prompt="bob secret prompt")

    first = alice_client.get(GALLERY_URL)
    second = alice_client.get(GALLERY_URL, {"page": 2})
    beyond = alice_client.get(GALLERY_URL, {"page": 99})

    assert first.status_code == second.status_code == 200
    assert [g.pk for g in first.context["page"].object_list] == created[::-1][:24]
    assert [g.pk for g in second.context["page"].object_list] == created[::-1][24:]
    assert [g.pk for g in beyond.context["page"].object_list] == created[::-1][24:]
    assert first.context["paginator"].count == 30
    html = first.content.decode()
    assert "30 images, newest first." in html
    assert 'href="?page=2" rel="next"' in html
    assert "Page 1 of 2" in html
    assert "bob secret prompt" not in html
    assert 'href="?page=1" rel="prev"' in second.content.decode()


def test_gallery_cards_show_images_or_status_placeholders(
    alice_client: Client, alice: User, image_files
) -> None:
    done = _succeeded(alice, image_files, _png())
    failed = _generation(alice, status=GenerationStatus.FAILED, error_code="timeout")

    html = alice_client.get(GALLERY_URL).content.decode()

    assert (
        f'<img src="/generations/{done.pk}/image" alt="a lighthouse at dusk" loading="lazy"' in html
    )
    assert f'href="/generations/{failed.pk}/"' in html
    assert '<span class="badge failed">Failed</span>' in html
    assert f"/generations/{failed.pk}/image" not in html


def test_gallery_empty_state(alice_client: Client) -> None:
    html = alice_client.get(GALLERY_URL).content.decode()

    assert "No images yet" in html
    assert 'href="/generate/">Generate your first image</a>' in html


# --- detail -------------------------------------------------------------------------


def test_detail_of_succeeded_generation(alice_client: Client, alice: User, image_files) -> None:
    generation = _succeeded(
        alice,
        image_files,
        _png(),
        negative_prompt="blurry",
        seed=None,
        cost_usd_micros=12345,
        cost_wei=10**21 + 7,
    )
    Generation.objects.filter(pk=generation.pk).update(
        created_at=generation.finished_at - timedelta(seconds=5),
        started_at=generation.finished_at - timedelta(seconds=3, milliseconds=500),
    )

    response = alice_client.get(f"/generations/{generation.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<img class="detail-image" src="/generations/{generation.pk}/image"' in html
    assert '<span class="badge succeeded" data-status-badge>Succeeded</span>' in html
    assert "a lighthouse at dusk" in html
    assert "blurry" in html
    assert "<code>ByteDance/SDXL-Lightning</code>" in html
    assert "512 × 384" in html
    assert "<code>1234</code>" in html  # image_seed, since no seed was asked for
    assert "<dd>1.5 s</dd>" in html  # queued for
    assert "<dd>3.5 s</dd>" in html  # generation time
    assert '<span class="cost">$0.012345</span>' in html
    assert "1,000,000,000,000,000,000,007 wei" in html
    assert "Pending metering" not in html
    assert f'href="/generations/{generation.pk}/image?download=1" download' in html
    assert f'action="/generations/{generation.pk}/delete/"' in html
    assert "data-watch" not in html
    similar = response.context["similar_url"]
    assert similar == (
        "/generate/?prompt=a+lighthouse+at+dusk&negative_prompt=blurry"
        "&model_id=ByteDance%2FSDXL-Lightning&width=512&height=384"
    )


def test_detail_while_running_shows_progress_and_pending_cost(
    alice_client: Client, alice: User
) -> None:
    generation = _generation(
        alice,
        status=GenerationStatus.RUNNING,
        stage="generating",
        seed=9,
        started_at=timezone.now(),
    )

    html = alice_client.get(f"/generations/{generation.pk}/").content.decode()

    assert '<span class="badge running" data-status-badge>Running</span>' in html
    assert "Generating your image…" in html
    assert 'aria-valuenow="65"' in html
    assert f'data-watch="/api/v1/generations/{generation.pk}"' in html
    assert "Pending metering" in html
    assert "<code>9</code>" in html
    assert "?download=1" not in html
    assert "&seed=9" in alice_client.get(f"/generations/{generation.pk}/").context["similar_url"]


def test_detail_of_failed_generation_shows_message(alice_client: Client, alice: User) -> None:
    generation = _generation(
        alice,
        status=GenerationStatus.FAILED,
        stage="done",
        error_code="insufficient_credit",
        error_message="You're out of credit. Add funds to keep generating images.",
        finished_at=timezone.now(),
    )

    html = alice_client.get(f"/generations/{generation.pk}/").content.decode()

    assert (
        "<strong>You&#x27;re out of credit. Add funds to keep generating images.</strong>" in html
    )
    assert "Top up your pymthouse balance" in html
    assert '<span class="badge failed" data-status-badge>Failed</span>' in html
    assert "?download=1" not in html


# --- ownership ------------------------------------------------------------------------


def test_another_users_generation_is_404_everywhere(
    alice: User, bob_client: Client, image_files
) -> None:
    content = _png()
    generation = _succeeded(alice, image_files, content)
    image_path = Path(generation.image.path)

    detail = bob_client.get(f"/generations/{generation.pk}/")
    image = bob_client.get(f"/generations/{generation.pk}/image")
    download = bob_client.get(f"/generations/{generation.pk}/image", {"download": "1"})
    delete = bob_client.post(f"/generations/{generation.pk}/delete/")

    assert [r.status_code for r in (detail, image, download, delete)] == [404, 404, 404, 404]
    for response in (detail, image, download, delete):
        assert b"a lighthouse at dusk" not in b"".join(
            response.streaming_content if response.streaming else [response.content]
        )
    assert Generation.objects.filter(pk=generation.pk).exists()
    assert image_path.read_bytes() == content


def test_unknown_generation_is_404(alice_client: Client) -> None:
    missing = uuid.uuid4()
    assert alice_client.get(f"/generations/{missing}/").status_code == 404
    assert alice_client.get(f"/generations/{missing}/image").status_code == 404
    assert alice_client.post(f"/generations/{missing}/delete/").status_code == 404


# --- image ----------------------------------------------------------------------------


def test_image_streams_exact_bytes_with_headers(
    alice_client: Client, alice: User, image_files
) -> None:
    content = _png(5, 4)
    generation = _succeeded(alice, image_files, content)

    response = alice_client.get(f"/generations/{generation.pk}/image")

    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == content
    assert response["Content-Type"] == "image/png"
    assert response["Content-Length"] == str(len(content))
    assert response["Cache-Control"] == "private, max-age=3600"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response["Content-Disposition"].startswith("attachment")


def test_image_download_is_an_attachment(alice_client: Client, alice: User, image_files) -> None:
    content = _png()
    generation = _succeeded(alice, image_files, content)

    response = alice_client.get(f"/generations/{generation.pk}/image", {"download": "1"})

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
    assert response["Content-Disposition"] == (
        f'attachment; filename="pixelhouse-{str(generation.pk)[:8]}.png"'
    )


@pytest.mark.parametrize("status", [GenerationStatus.QUEUED, GenerationStatus.FAILED])
def test_image_is_404_unless_succeeded(
    alice_client: Client, alice: User, image_files, status
) -> None:
    generation = _succeeded(alice, image_files, _png())
    Generation.objects.filter(pk=generation.pk).update(status=status)

    assert alice_client.get(f"/generations/{generation.pk}/image").status_code == 404


def test_image_is_404_when_the_file_is_missing(
    alice_client: Client, alice: User, image_files
) -> None:
    generation = _succeeded(alice, image_files, _png())
    Path(generation.image.path).unlink()

    assert alice_client.get(f"/generations/{generation.pk}/image").status_code == 404

    Generation.objects.filter(pk=generation.pk).update(image="")
    assert alice_client.get(f"/generations/{generation.pk}/image").status_code == 404


# --- delete ---------------------------------------------------------------------------


def test_delete_removes_row_and_file_and_redirects_to_gallery(
    alice_client: Client, alice: User, image_files, django_capture_on_commit_callbacks
) -> None:
    generation = _succeeded(alice, image_files, _png())
    image_path = Path(generation.image.path)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"/generations/{generation.pk}/delete/", follow=True)

    assert response.redirect_chain == [("/gallery/", 302)]
    assert [str(m) for m in response.context["messages"]] == ["Image deleted."]
    assert not Generation.objects.filter(pk=generation.pk).exists()
    assert not image_path.exists()


def test_delete_of_running_generation_is_refused(alice_client: Client, alice: User) -> None:
    generation = _generation(alice, status=GenerationStatus.RUNNING, stage="paying")

    response = alice_client.post(f"/generations/{generation.pk}/delete/", follow=True)

    assert response.redirect_chain == [(f"/generations/{generation.pk}/", 302)]
    assert [str(m) for m in response.context["messages"]] == [
        "This image is still being generated. Delete it once it has finished."
    ]
    assert Generation.objects.filter(pk=generation.pk, status=GenerationStatus.RUNNING).exists()


def test_delete_is_post_only(alice_client: Client, alice: User) -> None:
    generation = _generation(alice)

    assert alice_client.get(f"/generations/{generation.pk}/delete/").status_code == 405
    assert Generation.objects.filter(pk=generation.pk).exists()


# --- filters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12345, "$0.012345"),
        ("12345", "$0.012345"),
        (0, "$0.00"),
        (1_500_000, "$1.50"),
        (1_234_567_890_123, "$1,234,567.890123"),
        (10, "$0.00001"),
        (12.5, ""),
        (None, ""),
        ("1e3", ""),
        (True, ""),
    ],
)
def test_usd_micros_filter_is_integer_only(value, expected) -> None:
    assert usd_micros(value) == expected


def test_exact_intcomma_keeps_every_digit() -> None:
    assert exact_intcomma(2**255) == f"{2**255:,}"
    assert exact_intcomma("123456789012345678901234567890") == (
        "123,456,789,012,345,678,901,234,567,890"
    )
    assert exact_intcomma(1.5) == ""


def test_duration_filter() -> None:
    assert duration(None) == "—"
    assert duration(0.42) == "0.4 s"
    assert duration(125) == "2 min 05 s"
