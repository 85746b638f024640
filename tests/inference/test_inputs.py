"""Hostile and oversized input: NUL, control and bidi characters, bodies over the limit."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from inference.models import Generation

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"
RLO = "\u202e"


def _post(api: Client, django_capture_on_commit_callbacks, **body):
    payload = {"prompt": "a red fox", "width": 512, "height": 512, **body}
    with django_capture_on_commit_callbacks():
        return api.post(URL, payload, content_type="application/json")


def test_a_json_body_over_the_upload_limit_is_413_with_a_json_error(api: Client, settings) -> None:
    body = json.dumps({"prompt": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "width": 512,
                       "height": 512})  # fmt: skip
    response = api.post(URL, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {
        "code": "body_too_large",
        "detail": f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
    }
    assert not Generation.objects.exists()


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_nul_in_a_prompt_is_refused(
    api: Client, django_capture_on_commit_callbacks, field: str
) -> None:
    response = _post(api, django_capture_on_commit_callbacks, **{field: "a red\x00 fox"})
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert "NUL" in response.json()["errors"][field]
    assert not Generation.objects.exists()


def test_a_nul_in_the_web_form_is_refused(api: Client) -> None:
    response = api.post("/generate/", {"prompt": "a red\x00 fox", "width": 512, "height": 512})
    assert response.status_code == 400  # the form again, with its error
    assert "Null characters are not allowed." in response.content.decode()
    assert not Generation.objects.exists()


def test_control_and_bidi_characters_are_stripped_and_user_text_is_isolated(
    api: Client, django_capture_on_commit_callbacks
) -> None:
    response = _post(
        api,
        django_capture_on_commit_callbacks,
        prompt=f"a red fox{RLO}gnp.exe\x07\x1b[31m\u2066x\u2069\tin snow\n",
        negative_prompt=f"{RLO}blurry\x85",
    )
    assert response.status_code == 201, response.content
    generation = Generation.objects.get()
    assert generation.prompt == "a red foxgnp.exe[31mx\tin snow"
    assert generation.negative_prompt == "blurry"
    page = api.get(f"/generations/{generation.pk}/").content.decode()
    assert '<p class="prompt-text" dir="auto">a red foxgnp.exe[31mx\tin snow</p>' in page
    assert RLO not in page
    gallery = api.get("/gallery/").content.decode()
    assert '<p class="gen-card-prompt" dir="auto">' in gallery
