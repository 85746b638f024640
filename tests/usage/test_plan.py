"""The usage sync's planning step, without a database: plain values in, a plan out."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import pytest

from integrations.pymthouse import UsageByManifest
from usage.services.plan import (
    AggregateRow,
    DayDelta,
    DriftFigures,
    LocalUser,
    MeteredDay,
    NewManifest,
    Poison,
    Revision,
    Settlement,
    StoredAggregate,
    StoredManifest,
    chunk_plan,
    drift_figures,
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
    assert plan.drift == {
        ("u-2", TODAY): MeteredDay(fee_wei=7, usd_micros=3),
        ("u-1", date(2026, 12, 1)): MeteredDay(fee_wei=5, usd_micros=2),
    }
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


# --- drift: a fee difference vs a rate difference ------------------------------------------

FINNEY = 10**15  # 0.001 ETH
AT_3000 = Fraction(3000) * 10**6 / 10**18  # USD micros per wei at $3,000/ETH


def test_drift_a_pure_fee_difference() -> None:
    # We charged 0.001 ETH at $3,000/ETH ($3); the network metered 0.002 ETH at the same
    # rate ($6): all of the $3 difference is wei the network charged beyond ours.
    figures = drift_figures(
        local_wei=FINNEY,
        local_usd_exact=FINNEY * AT_3000,
        metered=MeteredDay(fee_wei=2 * FINNEY, usd_micros=6_000_000),
        charge_expected=True,
        alert_wei=0,
    )
    assert figures == DriftFigures(
        local_debit_wei=FINNEY,
        local_usd_micros=3_000_000,
        metered_fee_wei=2 * FINNEY,
        metered_usd_micros=6_000_000,
        fee_diff_wei=FINNEY,
        rate_diff_usd_micros=0,
        alert=True,
    )


def test_drift_a_pure_rate_difference() -> None:
    # The same 0.001 ETH: we converted it at $3,000/ETH ($3), pymthouse at $3,100/ETH
    # ($3.10). No fee difference; the $0.10 is the rate, and no alert (same wei).
    figures = drift_figures(
        local_wei=FINNEY,
        local_usd_exact=FINNEY * AT_3000,
        metered=MeteredDay(fee_wei=FINNEY, usd_micros=3_100_000),
        charge_expected=True,
        alert_wei=0,
    )
    assert (figures.local_usd_micros, figures.metered_usd_micros) == (3_000_000, 3_100_000)
    assert (figures.fee_diff_wei, figures.rate_diff_usd_micros) == (0, 100_000)
    assert figures.alert is False


def test_drift_both_differences_and_a_lower_metered_rate() -> None:
    # Metered 0.003 ETH at $2,900/ETH ($8.70) vs our 0.001 ETH at $3,000/ETH ($3):
    # fee difference 0.002 ETH (= $6 at our rate); rate difference $8.70 − $9 = −$0.30.
    figures = drift_figures(
        local_wei=FINNEY,
        local_usd_exact=FINNEY * AT_3000,
        metered=MeteredDay(fee_wei=3 * FINNEY, usd_micros=8_700_000),
        charge_expected=True,
        alert_wei=0,
    )
    assert (figures.fee_diff_wei, figures.rate_diff_usd_micros) == (2 * FINNEY, -300_000)
    # The parts add up: metered − local USD = fee difference at our rate + rate difference.
    assert 8_700_000 - 3_000_000 == 2 * FINNEY * AT_3000 + figures.rate_diff_usd_micros


def test_drift_local_usd_is_exact_over_several_rates_and_rounded_up_once() -> None:
    # Two debits of 1 wei each at $3,000 and $3,100/ETH: 0.000003 + 0.0000031 µ$, which
    # rounds up once to 1 µ$ (not 1 + 1 µ$ rounded per debit).
    exact = Fraction(3000) * 10**6 / 10**18 + Fraction(3100) * 10**6 / 10**18
    figures = drift_figures(
        local_wei=2, local_usd_exact=exact, metered=MeteredDay(), charge_expected=True,
        alert_wei=0,
    )  # fmt: skip
    assert (figures.local_usd_micros, figures.fee_diff_wei, figures.rate_diff_usd_micros) == (
        1,
        -2,
        0,
    )


def test_drift_with_nothing_debited_is_a_fee_difference_and_alerts_only_if_expected() -> None:
    metered = MeteredDay(fee_wei=FINNEY, usd_micros=3_100_000)
    free = drift_figures(
        local_wei=0, local_usd_exact=Fraction(0), metered=metered, charge_expected=False,
        alert_wei=0,
    )  # fmt: skip
    assert (free.fee_diff_wei, free.rate_diff_usd_micros, free.alert) == (FINNEY, 0, False)
    paid = drift_figures(
        local_wei=0, local_usd_exact=Fraction(0), metered=metered, charge_expected=True,
        alert_wei=FINNEY - 1,
    )  # fmt: skip
    assert paid.alert is True
    under_threshold = drift_figures(
        local_wei=0, local_usd_exact=Fraction(0), metered=metered, charge_expected=True,
        alert_wei=FINNEY,
    )  # fmt: skip
    assert under_threshold.alert is False
