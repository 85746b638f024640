"""The OpenAPI schema of POST /api/v1/generations states exactly what the server enforces.

Each limit is read from the published schema (not from settings), then a submission at the
limit is admitted and one just past it is refused with the service's message, writing nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from inference.models import Generation
from tests.inference.paying_user import pay_as_you_go_user

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


@pytest.fixture
def schema(client: Client) -> dict[str, Any]:
    document = client.get("/api/v1/openapi.json").json()
    body = document["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    generation_in: dict[str, Any] = document["components"]["schemas"][name]
    return generation_in


@pytest.fixture
def api(settings, django_capture_on_commit_callbacks) -> Client:
    settings.INFERENCE_RATE_LIMIT_COUNT = 1000
    settings.INFERENCE_MAX_ACTIVE_PER_USER = 1000
    with django_capture_on_commit_callbacks():
        user = pay_as_you_go_user()
    client = Client()
    client.force_login(user)
    return client


def _submit(api: Client, django_capture_on_commit_callbacks, **body: Any):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(URL, {"prompt": "a red fox", **body}, content_type="application/json")
    return response, callbacks


def _admitted(api, capture, **body) -> dict[str, Any]:
    before = Generation.objects.count()
    response, callbacks = _submit(api, capture, **body)
    assert response.status_code == 201, (body, response.json())
    assert Generation.objects.count() == before + 1
    assert len(callbacks) == 1
    result: dict[str, Any] = response.json()
    return result


def _refused(api, capture, field: str, message: str, **body) -> None:
    before = Generation.objects.count()
    response, callbacks = _submit(api, capture, **body)
    assert response.status_code == 400, body
    assert response.json() == {
        "detail": "Please correct the highlighted fields.",
        "errors": {field: message},
    }
    assert Generation.objects.count() == before
    assert callbacks == []


def test_only_the_prompt_is_required_and_the_defaults_are_the_generate_pages(
    schema, api: Client, django_capture_on_commit_callbacks
) -> None:
    assert schema["required"] == ["prompt"]
    properties = schema["properties"]
    created = _admitted(api, django_capture_on_commit_callbacks)

    assert created["width"] == properties["width"]["default"] == 1024
    assert created["height"] == properties["height"]["default"] == 1024
    assert created["model_id"] == properties["model_id"]["default"] == "ByteDance/SDXL-Lightning"
    assert created["seed"] is None
    assert properties["seed"].get("default") is None  # pydantic leaves a None default out
    assert created["negative_prompt"] == properties["negative_prompt"]["default"] == ""
    # The generate page starts with the same choices.
    page = api.get("/generate/").content.decode()
    assert 'value="1024x1024" data-width="1024" data-height="1024" checked>' in page
    assert '<option value="ByteDance/SDXL-Lightning" selected>' in page


def test_prompt_lengths(schema, api: Client, django_capture_on_commit_callbacks) -> None:
    prompt, negative = schema["properties"]["prompt"], schema["properties"]["negative_prompt"]
    assert prompt["minLength"] == 1

    _admitted(api, django_capture_on_commit_callbacks, prompt="x" * prompt["maxLength"])
    _refused(api, django_capture_on_commit_callbacks, "prompt",
             f"Keep the prompt under {prompt['maxLength']} characters.",
             prompt="x" * (prompt["maxLength"] + 1))  # fmt: skip
    _refused(api, django_capture_on_commit_callbacks, "prompt", "Describe the image you want.",
             prompt="")  # fmt: skip
    _admitted(api, django_capture_on_commit_callbacks, negative_prompt="y" * negative["maxLength"])
    _refused(api, django_capture_on_commit_callbacks, "negative_prompt",
             f"Keep the negative prompt under {negative['maxLength']} characters.",
             negative_prompt="y" * (negative["maxLength"] + 1))  # fmt: skip


@pytest.mark.parametrize("name", ["width", "height"])
def test_sizes(schema, api: Client, django_capture_on_commit_callbacks, name: str) -> None:
    size = schema["properties"][name]
    low, high, step = size["minimum"], size["maximum"], size["multipleOf"]
    message = f"{name.capitalize()} must be a multiple of {step} between {low} and {high}."

    assert _admitted(api, django_capture_on_commit_callbacks, **{name: low})[name] == low
    assert _admitted(api, django_capture_on_commit_callbacks, **{name: high})[name] == high
    _refused(api, django_capture_on_commit_callbacks, name, message, **{name: low - step})
    _refused(api, django_capture_on_commit_callbacks, name, message, **{name: high + step})
    _refused(api, django_capture_on_commit_callbacks, name, message, **{name: low + step - 1})


def test_seed_range(schema, api: Client, django_capture_on_commit_callbacks) -> None:
    seed = schema["properties"]["seed"]
    low, high = seed["minimum"], seed["maximum"]
    message = f"Seed must be a whole number between {low} and {high}."

    assert _admitted(api, django_capture_on_commit_callbacks, seed=low)["seed"] == low
    assert _admitted(api, django_capture_on_commit_callbacks, seed=high)["seed"] == high
    _refused(api, django_capture_on_commit_callbacks, "seed", message, seed=low - 1)
    _refused(api, django_capture_on_commit_callbacks, "seed", message, seed=high + 1)


def test_models(schema, api: Client, django_capture_on_commit_callbacks) -> None:
    models = schema["properties"]["model_id"]["enum"]
    assert models == api.get("/api/v1/models").json()["models"]

    for model in models:
        created = _admitted(api, django_capture_on_commit_callbacks, model_id=model)
        assert created["model_id"] == model
    _refused(api, django_capture_on_commit_callbacks, "model_id",
             "Choose one of the available models.", model_id=models[0] + "-not")  # fmt: skip
