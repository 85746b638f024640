"""The usage sync's planning step, without a database: plain values in, a plan out."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from integrations.pymthouse import UsageByManifest
from usage.services.plan import (
    AggregateRow,
    DayDelta,
    LocalUser,
    NewManifest,
    Poison,
    Revision,
    Settlement,
    StoredAggregate,
    StoredManifest,
    chunk_plan,
    manifest_rows_screen,
    new_manifest_ids,
    users_screen,
)

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
TODAY = NOW.date()
GEN_A = uuid.UUID("00000000-0000-0000-0000-00000000000a")
GEN_B = uuid.UUID("00000000-0000-0000-0000-00000000000b")


def row(manifest_id: str, fee_wei: int, usd: int = 1, **extra: Any) -> UsageByManifest:
    return UsageByManifest.model_validate(
        {
            "manifestId": manifest_id,
            "currency": "USD",
            "feeWei": str(fee_wei),
            "networkFeeUsdMicros": str(usd),
            **extra,
        }
    )


def plan_for(**overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "fetched": {},
        "upstream": {},
        "users": {},
        "existing": {},
        "previous": {},
        "generations": {},
        "now": NOW,
    }
    arguments.update(overrides)
    return chunk_plan(**arguments)


def test_new_rows_are_inserted_joined_and_settled_in_lock_order() -> None:
    plan = plan_for(
        fetched={"u-2": [row("m-b", 7, 3)], "u-1": [row("m-a", 5, 2, pipeline="p" * 150)]},
        upstream={"u-1": (1, 2), "u-2": (1, 3)},
        users={"u-1": LocalUser(pk=9, email="A@x.test"), "u-2": LocalUser(pk=4, email="b@x")},
        generations={(9, "m-a"): (GEN_A, date(2026, 12, 1)), (4, "m-b"): (GEN_B, TODAY)},
    )
    assert plan.inserts == [
        NewManifest("u-2", "m-b", 4, GEN_B, 7, 3, "", "", TODAY),
        NewManifest("u-1", "m-a", 9, GEN_A, 5, 2, "p" * 100, "", date(2026, 12, 1)),
    ]
    # Accounts in id order (4 before 9): the one lock order of the sync.
    assert plan.settlements == [
        Settlement(4, GEN_B, 7, 3, "manifest:m-b"),
        Settlement(9, GEN_A, 5, 2, "manifest:m-a"),
    ]
    assert plan.days == {date(2026, 12, 1): DayDelta(5, 2, 1), TODAY: DayDelta(7, 3, 1)}
    assert plan.drift == {("u-2", TODAY): 7, ("u-1", date(2026, 12, 1)): 5}
    assert plan.aggregates == [
        AggregateRow("u-2", 4, 1, 3, 7, 1, NOW, "b@x"),
        AggregateRow("u-1", 9, 1, 2, 5, 1, NOW, "A@x.test"),
    ]
    assert (plan.revisions, plan.quarantine) == ([], [])


def test_a_row_seen_before_with_another_amount_is_a_revision_not_an_insert() -> None:
    before = datetime(2026, 11, 30, tzinfo=UTC)
    plan = plan_for(
        fetched={"u-1": [row("m-a", 5, 2), row("m-b", 6, 1)]},
        upstream={"u-1": (2, 3)},
        existing={
            ("u-1", "m-a"): StoredManifest(pk=11, fee_wei=5, network_fee_usd_micros=2, day=TODAY),
            ("u-1", "m-b"): StoredManifest(pk=12, fee_wei=4, network_fee_usd_micros=1, day=TODAY),
        },
        previous={"u-1": StoredAggregate(request_count=2, last_used_at=before)},
    )
    assert plan.inserts == []
    assert plan.revisions == [Revision(manifest_pk=12, fee_wei=6, network_fee_usd_micros=1)]
    assert plan.flagged == {12}
    assert plan.settlements == []
    assert plan.drift == {}
    # The first amounts stay; the count did not grow, so last_used_at is kept.
    assert plan.aggregates == [AggregateRow("u-1", None, 2, 3, 9, 2, before, "")]


def test_an_unjoined_row_is_kept_on_the_day_it_was_first_seen_and_never_settled() -> None:
    plan = plan_for(fetched={"u-1": [row("m-a", 5)]}, upstream={"u-1": (1, 1)})
    assert [(new.generation_id, new.day) for new in plan.inserts] == [(None, TODAY)]
    assert plan.settlements == []


def test_a_manifest_listed_twice_with_different_amounts_is_a_conflict_never_charged() -> None:
    plan = plan_for(
        fetched={"u-1": [row("m-a", 5), row("m-a", 9), row("m-b", 3), row("m-b", 3)]},
        upstream={"u-1": (3, 3)},
        users={"u-1": LocalUser(pk=9, email="")},
        generations={(9, "m-a"): (GEN_A, TODAY), (9, "m-b"): (GEN_B, TODAY)},
    )
    assert [new.manifest_id for new in plan.inserts] == ["m-b"]  # same amounts: one row
    assert [settlement.generation_id for settlement in plan.settlements] == [GEN_B]
    assert [(p.kind, p.manifest_id, p.reason) for p in plan.quarantine] == [
        ("conflict", "m-a", "listed 2 times with 2 different amounts"),
        ("conflict", "m-a", "listed 2 times with 2 different amounts"),
    ]
    assert ['"feeWei": "5"' in p.raw for p in plan.quarantine] == [True, False]
    assert plan.aggregates[0].fee_wei == 3
    assert plan.aggregates[0].manifest_count == 1


def test_a_manifest_id_longer_than_the_column_is_quarantined_the_rest_applied() -> None:
    long_id = "m" * 201
    plan = plan_for(
        fetched={"u-1": [row(long_id, 5), row("m-ok", 2)]},
        upstream={"u-1": (2, 2)},
    )
    assert [new.manifest_id for new in plan.inserts] == ["m-ok"]
    assert plan.quarantine == [
        Poison(
            kind="manifest_row",
            external_user_id="u-1",
            manifest_id=long_id,
            reason="manifestId longer than 200 characters",
            raw=(
                f'{{"externalUserId": "u-1", "manifestId": "{long_id}", "feeWei": "5", '
                '"networkFeeUsdMicros": "1", "pipeline": null, "modelId": null}'
            ),
        )
    ]


@pytest.mark.parametrize(
    ("ext", "requests", "reason"),
    [
        ("owner:abc", 1, "externalUserId refused: externalUserId must not use owner: or user:"),
        ("ann@example.com", 1, "externalUserId refused: externalUserId must be a machine id"),
        ("u-big", 2**63, "requestCount does not fit a 64-bit column"),
    ],
)
def test_a_user_row_the_mirror_cannot_hold_is_quarantined_and_not_fetched(
    ext: str, requests: int, reason: str
) -> None:
    accepted, poison = users_screen({"u-ok": (2**63 - 1, 5), ext: (requests, 7)})
    assert accepted == {"u-ok": (2**63 - 1, 5)}
    assert len(poison) == 1
    assert (poison[0].kind, poison[0].external_user_id) == ("user_row", ext)
    assert poison[0].reason.startswith(reason)
    assert f'"requestCount": "{requests}"' in poison[0].raw


def test_new_manifest_ids_are_the_join_input() -> None:
    rows, poison = manifest_rows_screen({"u-1": [row("m-a", 1), row("m-b", 1)]})
    existing = {
        ("u-1", "m-a"): StoredManifest(pk=1, fee_wei=1, network_fee_usd_micros=1, day=TODAY)
    }
    assert new_manifest_ids(rows, existing) == {"m-b"}
    assert poison == []
