"""Idempotency-Key on POST /api/v1/generations: Stripe's semantics, money moved once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import Hold, LedgerEntry, Plan
from billing.services import account_change_plan, plans_seed
from inference.errors import IdempotencyKeyInUseError
from inference.models import Generation, GenerationStatus, IdempotentRequest
from inference.services import (
    idempotent_request_begin,
    idempotent_request_complete,
    idempotent_requests_purge,
    request_fingerprint,
)
from tests.factories import UserFactory
from tests.inference.paying_user import HOLD_MICROS, ledger_kinds, pay_as_you_go_user

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"
BODY = {"prompt": "a lighthouse at dusk", "width": 512, "height": 512}


@pytest.fixture
def payer(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        return pay_as_you_go_user()


@pytest.fixture
def api(payer) -> Client:
    client = Client()
    client.force_login(payer)
    return client


def _post(client: Client, capture, body=BODY, key: str | None = "key-1"):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    with capture() as callbacks:
        response = client.post(URL, json.dumps(body), content_type="application/json", **headers)
    return response, callbacks


def test_a_repeat_returns_the_first_response_and_makes_holds_and_charges_nothing_more(
    api: Client, payer, django_capture_on_commit_callbacks
) -> None:
    first, first_callbacks = _post(api, django_capture_on_commit_callbacks)
    assert first.status_code == 201
    assert len(first_callbacks) == 1
    assert "Idempotent-Replayed" not in first
    generation = Generation.objects.get()
    kinds = ledger_kinds(payer)
    assert kinds[-1] == "hold"
    assert list(Hold.objects.values_list("generation_id", "amount_micros")) == [
        (generation.pk, HOLD_MICROS)
    ]
    # The image moves on; the repeat still answers what the first request answered.
    Generation.objects.filter(pk=generation.pk).update(status=GenerationStatus.RUNNING)

    again, again_callbacks = _post(api, django_capture_on_commit_callbacks)

    assert again.status_code == 201
    assert again.content == first.content
    assert again.json()["status"] == "queued"
    assert again["Idempotent-Replayed"] == "true"
    assert again_callbacks == []  # no second task
    assert Generation.objects.count() == 1
    assert Hold.objects.count() == 1
    assert ledger_kinds(payer) == kinds  # no second hold, no charge
    assert IdempotentRequest.objects.get().status == "completed"


def test_the_same_key_with_a_different_body_is_a_422_and_makes_nothing(
    api: Client, payer, django_capture_on_commit_callbacks
) -> None:
    _post(api, django_capture_on_commit_callbacks)
    entries = LedgerEntry.objects.count()

    response, callbacks = _post(api, django_capture_on_commit_callbacks, {**BODY, "seed": 7})

    assert response.status_code == 422
    assert response.json() == {
        "code": "idempotency_key_reused",
        "detail": "This Idempotency-Key was used with a different request. "
        "Use a new key for a new request.",
    }
    assert callbacks == []
    assert Generation.objects.count() == 1
    assert LedgerEntry.objects.count() == entries


def test_the_same_request_spelled_differently_is_the_same_request(
    api: Client, django_capture_on_commit_callbacks
) -> None:
    """Defaults and key order do not make a different request: the service's arguments do."""
    first, _ = _post(api, django_capture_on_commit_callbacks, {"prompt": "a fox"})
    spelled_out = {"width": 1024, "prompt": "a fox", "height": 1024, "seed": None}
    again, callbacks = _post(api, django_capture_on_commit_callbacks, spelled_out)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert callbacks == []
    assert Generation.objects.count() == 1


def test_a_repeat_while_the_first_is_in_progress_is_a_409_and_a_dead_claim_is_taken_over(
    api: Client, payer, django_capture_on_commit_callbacks
) -> None:
    # The first request holds the key and has not finished.
    claim = idempotent_request_begin(
        owner_id=payer.pk, key="key-1", fingerprint=request_fingerprint(_arguments(BODY))
    )
    entries = LedgerEntry.objects.count()

    response, callbacks = _post(api, django_capture_on_commit_callbacks)

    assert response.status_code == 409
    assert response.json() == {
        "code": "idempotency_key_in_use",
        "detail": "A request with this Idempotency-Key is still being processed. "
        "Retry in a moment.",
    }
    assert callbacks == []
    assert Generation.objects.count() == 0
    assert LedgerEntry.objects.count() == entries

    # A minute later the first request is presumed dead: the repeat takes the key over ...
    IdempotentRequest.objects.update(claimed_at=timezone.now() - timedelta(seconds=61))
    taken_over, callbacks = _post(api, django_capture_on_commit_callbacks)
    assert taken_over.status_code == 201
    assert len(callbacks) == 1
    # ... and the first, had it been only slow, can no longer complete (its work rolls back).
    with pytest.raises(IdempotencyKeyInUseError):
        idempotent_request_complete(claim=claim, status=201, body={})
    assert Generation.objects.count() == 1


def _arguments(body):
    return {"negative_prompt": "", "model_id": "ByteDance/SDXL-Lightning", "seed": None, **body}


def test_keys_belong_to_one_user(api: Client, django_capture_on_commit_callbacks) -> None:
    _post(api, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks():
        other_user = UserFactory()
    other = Client()
    other.force_login(other_user)

    response, callbacks = _post(other, django_capture_on_commit_callbacks)

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert len(callbacks) == 1
    assert Generation.objects.filter(owner=other_user).count() == 1
    assert Generation.objects.count() == 2


def test_a_key_is_forgotten_after_24_hours(api: Client, django_capture_on_commit_callbacks) -> None:
    _post(api, django_capture_on_commit_callbacks)
    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(hours=24))

    response, callbacks = _post(api, django_capture_on_commit_callbacks, {**BODY, "seed": 7})

    assert response.status_code == 201
    assert response.json()["seed"] == 7
    assert Generation.objects.count() == 2
    assert len(callbacks) == 1


def test_the_purge_deletes_only_expired_keys(
    api: Client, django_capture_on_commit_callbacks
) -> None:
    _post(api, django_capture_on_commit_callbacks, key="old")
    _post(api, django_capture_on_commit_callbacks, {**BODY, "seed": 1}, key="new")
    IdempotentRequest.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=24, seconds=1)
    )

    assert idempotent_requests_purge() == 1
    assert list(IdempotentRequest.objects.values_list("key", flat=True)) == ["new"]


def test_nothing_is_saved_for_a_400_so_the_key_may_be_sent_again(
    api: Client, django_capture_on_commit_callbacks
) -> None:
    refused, _ = _post(api, django_capture_on_commit_callbacks, {**BODY, "width": 500})
    assert refused.status_code == 400
    assert IdempotentRequest.objects.count() == 0

    fixed, callbacks = _post(api, django_capture_on_commit_callbacks)
    assert fixed.status_code == 201
    assert len(callbacks) == 1


def test_a_refusal_that_executed_is_the_answer_to_repeats(
    django_capture_on_commit_callbacks,
) -> None:
    """Out of credit (402) is saved like a success: a repeat gets the same 402, even after a
    top-up (Stripe: a new attempt needs a new key)."""
    with django_capture_on_commit_callbacks():
        broke = UserFactory()
        plan: Plan = next(plan for plan in plans_seed() if plan.slug == "pay-as-you-go")
        account_change_plan(user=broke, plan=plan, acting_user=None, reason="test setup")
    client = Client()
    client.force_login(broke)

    first, _ = _post(client, django_capture_on_commit_callbacks)
    again, callbacks = _post(client, django_capture_on_commit_callbacks)

    assert first.status_code == 402
    assert first.json()["code"] == "insufficient_credit"
    assert again.status_code == 402
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert callbacks == []
    assert Generation.objects.count() == 0
    assert LedgerEntry.objects.filter(account_id=broke.pk).count() == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve"])
def test_an_unusable_key_is_a_400(api: Client, django_capture_on_commit_callbacks, key) -> None:
    response, callbacks = _post(api, django_capture_on_commit_callbacks, key=key)

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid input.",
        "errors": {
            "Idempotency-Key": "Idempotency-Key must be 1 to 255 printable ASCII characters."
        },
    }
    assert callbacks == []
    assert Generation.objects.count() == 0


def test_the_openapi_schema_documents_the_header(client: Client) -> None:
    operation = client.get("/api/v1/openapi.json").json()["paths"][URL]["post"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert header["required"] is False
    assert {"201", "400", "402", "409", "422", "429"} <= set(operation["responses"])


def test_the_no_javascript_form_posted_twice_makes_one_image(
    api: Client, payer, django_capture_on_commit_callbacks
) -> None:
    page = api.get("/generate/").content.decode()
    key = page.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    assert len(key) == 32
    assert key not in api.get("/generate/").content.decode()  # a new one per rendering
    form = {"prompt": "a fox", "model_id": "ByteDance/SDXL-Lightning", "size": "512x512",
            "idempotency_key": key}  # fmt: skip

    with django_capture_on_commit_callbacks() as callbacks:
        first = api.post("/generate/", form)
        second = api.post("/generate/", form)

    generation = Generation.objects.get()
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"] == f"/generations/{generation.pk}/"
    assert len(callbacks) == 1
    assert Hold.objects.count() == 1
