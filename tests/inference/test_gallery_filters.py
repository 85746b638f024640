"""Issue 17 item 6: the gallery's search and filters, a deleted image's ledger rows, and
the styled 404 and 500 pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone

from accounts.models import User
from billing.models import EntryKind, LedgerEntry
from inference.models import Generation, GenerationStatus
from inference.services import generation_create, generation_delete
from tests.billing.conftest import usage_settle
from tests.factories import UserFactory
from tests.inference.paying_user import pay_as_you_go_user
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

GALLERY_URL = "/gallery/"
SDXL = "ByteDance/SDXL-Lightning"
FLUX = "black-forest-labs/FLUX.1-schnell"
FEE = 4_768_371_000_000  # wei


@pytest.fixture
def owner(django_capture_on_commit_callbacks) -> User:
    with django_capture_on_commit_callbacks():
        return UserFactory()


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _make(owner: User, prompt: str, *, status: str, model_id: str, minutes: int) -> Generation:
    generation = Generation.objects.create(
        owner=owner, prompt=prompt, model_id=model_id, width=512, height=512, status=status
    )
    Generation.objects.filter(pk=generation.pk).update(
        created_at=timezone.now() - timedelta(days=1) + timedelta(minutes=minutes)
    )
    return generation


@pytest.fixture
def gallery(owner: User) -> dict[str, Generation]:
    return {
        "lighthouse": _make(
            owner, "A Lighthouse at dusk", status="succeeded", model_id=SDXL, minutes=1
        ),
        "storm": _make(owner, "lighthouse in a storm", status="failed", model_id=FLUX, minutes=2),
        "cat": _make(owner, "a cat on a sofa", status="succeeded", model_id=FLUX, minutes=3),
        "queued": _make(owner, "a queued lighthouse", status="queued", model_id=SDXL, minutes=4),
    }


def _shown(client: Client, **query: str) -> list[str]:
    response = client.get(GALLERY_URL, query)
    assert response.status_code == 200
    return [g.prompt for g in response.context["page"].object_list]


def test_search_is_a_case_insensitive_part_of_the_prompt(owner: User, gallery) -> None:
    client = _client(owner)
    assert _shown(client, q="LIGHTHOUSE") == [
        "a queued lighthouse",
        "lighthouse in a storm",
        "A Lighthouse at dusk",
    ]
    assert _shown(client, q="  cat ") == ["a cat on a sofa"]
    assert _shown(client, q="unicorn") == []


def test_status_and_model_filters_combine_with_search(owner: User, gallery) -> None:
    client = _client(owner)
    assert _shown(client, status="succeeded") == ["a cat on a sofa", "A Lighthouse at dusk"]
    assert _shown(client, model=FLUX) == ["a cat on a sofa", "lighthouse in a storm"]
    assert _shown(client, q="lighthouse", model=FLUX) == ["lighthouse in a storm"]
    assert _shown(client, q="lighthouse", status="succeeded", model=SDXL) == [
        "A Lighthouse at dusk"
    ]
    # An unknown status or model filters nothing (a stale bookmark still shows the gallery).
    assert len(_shown(client, status="exploded", model="nope/nope")) == 4


def test_filters_show_their_values_a_no_match_state_and_are_kept_on_every_page(
    owner: User,
) -> None:
    for minutes in range(30):
        _make(owner, f"fox {minutes:02d}", status="failed", model_id=SDXL, minutes=minutes)
    _make(owner, "a succeeded fox", status="succeeded", model_id=SDXL, minutes=40)
    client = _client(owner)

    first = client.get(GALLERY_URL, {"q": "fox", "status": "failed"})
    html = first.content.decode()
    second = client.get(GALLERY_URL, {"q": "fox", "status": "failed", "page": 2})

    assert first.context["paginator"].count == 30
    assert "30 images found, newest first." in html
    assert 'href="?q=fox&amp;status=failed&amp;page=2" rel="next"' in html
    assert 'value="fox"' in html
    assert '<option value="failed" selected>Failed</option>' in html
    assert [g.prompt for g in second.context["page"].object_list] == [
        f"fox {m:02d}" for m in range(5, -1, -1)
    ]
    assert 'href="?q=fox&amp;status=failed&amp;page=1" rel="prev"' in second.content.decode()
    none = client.get(GALLERY_URL, {"q": "zebra"}).content.decode()
    assert "No images match" in none
    assert "No images yet" not in none


def test_filters_never_show_another_users_images(owner: User, gallery) -> None:
    with_other = UserFactory()
    _make(with_other, "another lighthouse", status="succeeded", model_id=SDXL, minutes=9)
    assert "another lighthouse" not in _shown(_client(owner), q="lighthouse")


def test_the_gallery_page_is_one_count_and_one_page_query(owner: User, gallery) -> None:
    client = _client(owner)
    client.get(GALLERY_URL)  # session and user warmed
    with CaptureQueriesContext(connection) as queries:
        client.get(GALLERY_URL, {"q": "lighthouse", "status": "failed", "model": FLUX})
    generation_queries = [q["sql"] for q in queries if "inference_generation" in q["sql"]]
    assert len(generation_queries) == 2  # COUNT, then the page


# --- a deleted image's ledger rows ------------------------------------------------------


def test_billing_activity_stops_linking_a_deleted_image_and_keeps_its_text(
    sandbox: SandboxControl, django_capture_on_commit_callbacks
) -> None:
    user = pay_as_you_go_user()
    kept = generation_create(owner=user, prompt="a kept fox", enqueue=False)
    gone = generation_create(owner=user, prompt="a deleted owl", enqueue=False)
    for number, generation in enumerate((kept, gone)):  # both charged, as metered usage
        assert usage_settle(generation_id=generation.pk, fee_wei=FEE, usage_ref=f"test:{number}")
    Generation.objects.filter(owner=user).update(status=GenerationStatus.SUCCEEDED, stage="done")
    with django_capture_on_commit_callbacks(execute=True):
        generation_delete(generation=gone, acting_user=user)
    client = _client(user)

    html = client.get("/billing/").content.decode()

    assert html.count(f'href="/generations/{kept.pk}/" data-image-link>View image</a>') == 1
    assert f"/generations/{gone.pk}/" not in html
    assert html.count("data-image-deleted>Image deleted</span>") == 1  # its charge
    assert "“a deleted owl” (SDXL-Lightning)" in html  # the row keeps its text
    kinds = LedgerEntry.objects.filter(generation_id=gone.pk).values_list("kind", flat=True)
    assert EntryKind.USAGE_DEBIT in kinds


# --- 404 and 500 ------------------------------------------------------------------------


def _boom(request):  # a view that fails
    raise RuntimeError("boom")


urlpatterns = [path("boom/", _boom), path("", include("config.urls"))]


@override_settings(DEBUG=False)
def test_404_is_the_styled_page(owner: User) -> None:
    response = _client(owner).get("/no-such-page/")
    html = response.content.decode()
    assert response.status_code == 404
    assert 'data-error-page="404"' in html
    assert "<title>Not found · pixelhouse</title>" in html
    assert 'href="/gallery/"' in html  # the signed-in navigation of the base layout


@override_settings(DEBUG=False, ROOT_URLCONF=__name__)
def test_500_is_the_styled_page_and_renders_without_the_database_or_a_request() -> None:
    client = Client(raise_request_exception=False)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/boom/")
    html = response.content.decode()
    assert response.status_code == 500
    assert 'data-error-page="500"' in html
    assert "<title>Something went wrong · pixelhouse</title>" in html
    assert queries.captured_queries == []


def test_500_template_renders_from_an_empty_context() -> None:
    from django.template import loader

    html = loader.get_template("500.html").render()  # what django.views.defaults does
    assert "Something went wrong" in html
