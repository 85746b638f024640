from __future__ import annotations

import uuid

import pytest
from django.test import Client

from inference.models import Generation, GenerationStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


def _create(api: Client, django_capture_on_commit_callbacks, **body):
    payload = {"prompt": "a red fox", "width": 512, "height": 512, **body}
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(URL, payload, content_type="application/json")
    return response, callbacks


def test_create_returns_201_and_enqueues_exactly_one_task(
    api: Client, user, django_capture_on_commit_callbacks
) -> None:
    response, callbacks = _create(api, django_capture_on_commit_callbacks, seed=42)

    assert response.status_code == 201
    body = response.json()
    generation = Generation.objects.get()
    assert body["id"] == str(generation.pk)
    assert body["status"] == "queued"
    assert body["progress"] == 5
    assert body["prompt"] == "a red fox"
    assert body["model_id"] == "ByteDance/SDXL-Lightning"
    assert (body["width"], body["height"], body["seed"]) == (512, 512, 42)
    assert body["error"] is None
    assert body["image_url"] is None
    assert body["detail_url"] == f"/generations/{generation.pk}/"
    assert body["cost"] == {"usd_micros": None, "wei": None}
    # A free plan holds and charges nothing; nothing has been paid to the network yet.
    assert body["money"] == {
        "quoted_micros": None,
        "quoted": None,
        "held_micros": None,
        "held": None,
        "hold_status": None,
        "charged_micros": None,
        "charged": None,
        "refunded_micros": None,
        "refunded": None,
    }
    assert body["network"] == {"fee_wei": None, "max_fee_wei": None, "eth_usd_rate": None}
    assert generation.owner_id == user.pk
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"prompt": "   "}, {"prompt": "Describe the image you want."}),
        ({"width": 500}, {"width": "Width must be a multiple of 8 between 256 and 1536."}),
        ({"height": 4096}, {"height": "Height must be a multiple of 8 between 256 and 1536."}),
        ({"model_id": "evil/model"}, {"model_id": "Choose one of the available models."}),
        ({"seed": -1}, {"seed": "Seed must be a whole number between 0 and 4294967295."}),
        ({"seed": 2**32}, {"seed": "Seed must be a whole number between 0 and 4294967295."}),
        ({"prompt": "x" * 1001}, {"prompt": "Keep the prompt under 1000 characters."}),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    api: Client, django_capture_on_commit_callbacks, body, errors
) -> None:
    response, callbacks = _create(api, django_capture_on_commit_callbacks, **body)

    assert response.status_code == 400
    assert response.json() == {"detail": "Please correct the highlighted fields.", "errors": errors}
    assert Generation.objects.count() == 0
    assert callbacks == []


def test_wrongly_typed_input_is_a_400_not_a_422(
    api: Client, django_capture_on_commit_callbacks
) -> None:
    response, callbacks = _create(api, django_capture_on_commit_callbacks, width="wide")

    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Invalid input."
    assert list(body["errors"]) == ["width"]
    assert Generation.objects.count() == 0
    assert callbacks == []


def test_anonymous_requests_are_refused(client: Client) -> None:
    assert client.get(URL).status_code == 401
    assert client.post(URL, {}, content_type="application/json").status_code == 401


def test_csrf_is_enforced_for_session_auth(user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(
        URL, {"prompt": "x", "width": 512, "height": 512}, content_type="application/json"
    )
    assert response.status_code == 403
    assert Generation.objects.count() == 0


def test_creation_is_rate_limited_per_user_with_retry_after(
    api: Client, settings, django_capture_on_commit_callbacks
) -> None:
    settings.INFERENCE_RATE_LIMIT_COUNT = 3
    settings.INFERENCE_MAX_ACTIVE_PER_USER = 100
    statuses = []
    enqueued = 0
    for _ in range(5):
        response, callbacks = _create(api, django_capture_on_commit_callbacks)
        statuses.append(response.status_code)
        enqueued += len(callbacks)
    assert statuses == [201, 201, 201, 429, 429]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json() == {"detail": "You're generating too fast. Please wait a moment."}
    assert Generation.objects.count() == 3
    assert enqueued == 3

    # another user is unaffected
    with django_capture_on_commit_callbacks():
        other = UserFactory()
    other_client = Client()
    other_client.force_login(other)
    response, _ = _create(other_client, django_capture_on_commit_callbacks)
    assert response.status_code == 201


def test_active_generation_cap(api: Client, settings, django_capture_on_commit_callbacks) -> None:
    settings.INFERENCE_MAX_ACTIVE_PER_USER = 2
    codes = [_create(api, django_capture_on_commit_callbacks)[0].status_code for _ in range(3)]
    assert codes == [201, 201, 429]


def _generation(owner, **fields) -> Generation:
    defaults = {"prompt": "p", "model_id": "ByteDance/SDXL-Lightning", "width": 512, "height": 512}
    return Generation.objects.create(owner=owner, **{**defaults, **fields})


def test_get_and_list_are_owner_scoped_and_paginated(
    api: Client, user, django_capture_on_commit_callbacks
) -> None:
    mine = [_generation(user, prompt=f"mine {i}") for i in range(3)]
    with django_capture_on_commit_callbacks():
        stranger = UserFactory()
    theirs = _generation(stranger, prompt="secret")

    response = api.get(URL, {"page_size": 2})
    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 3
    assert [item["prompt"] for item in body["items"]] == ["mine 2", "mine 1"]
    assert (body["page"], body["next_page"], body["previous_page"]) == (1, 2, None)
    page2 = api.get(URL, {"page_size": 2, "page": 2}).json()
    assert [item["prompt"] for item in page2["items"]] == ["mine 0"]
    assert page2["next_page"] is None

    assert api.get(f"{URL}/{mine[0].pk}").json()["prompt"] == "mine 0"
    for path in (f"{URL}/{theirs.pk}", f"{URL}/{uuid.uuid4()}", f"{URL}/not-a-uuid"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    assert b"secret" not in api.get(URL).content


def test_delete_is_owner_scoped_and_refuses_running(
    api: Client, user, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks():
        stranger = UserFactory()
    theirs = _generation(stranger)
    running = _generation(user, status=GenerationStatus.RUNNING)
    done = _generation(user, status=GenerationStatus.SUCCEEDED)

    assert api.delete(f"{URL}/{theirs.pk}").status_code == 404
    assert Generation.objects.filter(pk=theirs.pk).exists()
    response = api.delete(f"{URL}/{running.pk}")
    assert response.status_code == 409
    assert Generation.objects.filter(pk=running.pk).exists()
    assert api.delete(f"{URL}/{done.pk}").status_code == 204
    assert not Generation.objects.filter(pk=done.pk).exists()


def test_mass_assignment_is_ignored(api: Client, user, django_capture_on_commit_callbacks) -> None:
    response, _ = _create(
        api,
        django_capture_on_commit_callbacks,
        status="succeeded",
        owner=999,
        cost_usd_micros=0,
        tickets_paid=5,
    )
    assert response.status_code == 201
    generation = Generation.objects.get()
    assert generation.status == GenerationStatus.QUEUED
    assert generation.owner_id == user.pk
    assert generation.cost_usd_micros is None
    assert generation.tickets_paid == 0


def test_models_endpoint_and_openapi_schema(api: Client) -> None:
    models = api.get("/api/v1/models").json()
    assert models["models"] == ["ByteDance/SDXL-Lightning", "black-forest-labs/FLUX.1-schnell"]
    assert models["default_model"] == "ByteDance/SDXL-Lightning"
    assert {"label": "Square", "width": 1024, "height": 1024} in models["sizes"]

    schema = api.get("/api/v1/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/api/v1/generations",
        "/api/v1/generations/{generation_id}",
        "/api/v1/models",
    }
    assert "429" in schema["paths"]["/api/v1/generations"]["post"]["responses"]


@pytest.mark.parametrize("page", ["99999999999999999999", "0", "-1", "3"])
def test_a_page_out_of_range_is_a_400(api: Client, user, page: str) -> None:
    for index in range(3):
        _generation(user, prompt=f"mine {index}")

    response = api.get(URL, {"page": page, "page_size": 2})

    assert response.status_code == 400
    assert response.json() == {"detail": "page must be between 1 and 2."}


def test_an_empty_list_has_exactly_one_page(api: Client) -> None:
    assert api.get(URL).json()["items"] == []
    assert api.get(URL, {"page": 2}).status_code == 400


def test_a_refused_admission_is_a_402_and_leaves_nothing_behind(
    api: Client, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    from inference.errors import GenerationAdmissionRefusedError
    from inference.services import admission

    def refuse(*, generation: Generation) -> None:
        # Admitted just before its INSERT, with the owner's rate-limit row locked (issue 16).
        assert not Generation.objects.filter(pk=generation.pk).exists()
        raise GenerationAdmissionRefusedError("You're out of credit.", code="insufficient_credit")

    # The admission hook billing plugs into (its CreditRefusedError is this error type).
    monkeypatch.setattr(admission, "generation_admit_step", refuse)
    response, callbacks = _create(api, django_capture_on_commit_callbacks)

    assert response.status_code == 402
    assert response.json() == {"detail": "You're out of credit.", "code": "insufficient_credit"}
    assert not Generation.objects.exists()
    assert callbacks == []


def test_the_payment_record_is_in_the_json_with_exact_wei_strings(api: Client, user) -> None:
    generation = _generation(user, prompt="paid")
    unpaid = api.get(f"{URL}/{generation.pk}").json()["payment"]
    assert unpaid == {
        "manifest_id": None,
        "price_wei": None,
        "price_unit": None,
        "units_paid": None,
        "expected_fee_wei": None,
    }
    price = 2**256 - 1  # beyond any float: must come back digit for digit
    Generation.objects.filter(pk=generation.pk).update(
        manifest_id="0a1b2c3d", price_wei=price, price_unit="fixed", units_paid=1,
        expected_fee_wei=price,
    )  # fmt: skip
    paid = api.get(f"{URL}/{generation.pk}").json()["payment"]
    assert paid == {
        "manifest_id": "0a1b2c3d",
        "price_wei": str(price),
        "price_unit": "fixed",
        "units_paid": 1,
        "expected_fee_wei": str(price),
    }
