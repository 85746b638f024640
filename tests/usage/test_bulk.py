"""The usage sync's set-based helpers on the running database (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from billing.db import values_in
from inference.models import Generation
from tests.factories import UserFactory
from usage.services.bulk import index_joins

pytestmark = pytest.mark.django_db

AWKWARD = ["a,b", 'q"x', "back\\slash", "{}", "NULL", " spaced ", "é", "it's"]


def test_values_in_binds_awkward_text_and_uuids_exactly() -> None:
    owner = UserFactory()
    made = {
        manifest_id: Generation.objects.create(
            owner=owner, prompt="p", model_id="m", width=512, height=512, manifest_id=manifest_id
        ).pk
        for manifest_id in [*AWKWARD, "other"]
    }
    found = set(
        Generation.objects.filter(manifest_id__in=values_in(AWKWARD)).values_list(
            "manifest_id", flat=True
        )
    )
    assert found == set(AWKWARD)  # "other" is not matched, nothing is split or unquoted
    wanted = [made["a,b"], made["{}"], uuid.uuid4()]
    assert set(
        Generation.objects.filter(pk__in=values_in(wanted, uuids=True)).values_list("pk", flat=True)
    ) == {made["a,b"], made["{}"]}
    assert not Generation.objects.filter(manifest_id__in=values_in([])).exists()


def _setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return str(cursor.fetchone()[0])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="planner settings: PostgreSQL")
def test_index_joins_turns_hash_joins_off_for_the_block_only() -> None:
    with transaction.atomic():
        assert _setting("enable_hashjoin") == "on"
        with index_joins():
            assert (_setting("enable_hashjoin"), _setting("enable_mergejoin")) == ("off", "off")
        assert (_setting("enable_hashjoin"), _setting("enable_mergejoin")) == ("on", "on")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="planner settings: PostgreSQL")
def test_index_joins_does_not_hide_the_error_that_aborted_the_transaction() -> None:
    with pytest.raises(DatabaseError) as raised:
        with transaction.atomic(), index_joins(), connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
    assert "division by zero" in str(raised.value)
    assert _setting("enable_hashjoin") == "on"  # rolled back with the savepoint
