from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from accounts.models import User
from billing.charts import ChartPoint, bar_chart_svg
from billing.db import WeiSum
from billing.models import Account, LedgerEntry, Plan
from billing.money import (
    MoneyParseError,
    apply_ratio,
    format_eth,
    format_usd,
    format_usd_micros,
    format_wei,
    parse_usd_amount,
    parse_usd_micros_text,
    parse_wei_text,
    usd_decimal,
)
from billing.services import account_open
from tests.billing.conftest import grant

MAX = 2**256 - 1
BIG = [10**30, 10**30 + 1, MAX]


@pytest.mark.parametrize("text", ["0", "1", "1000000000000000000", str(MAX)])
def test_wei_text_parses_canonical_digits(text: str) -> None:
    assert parse_wei_text(text) == int(text)


@pytest.mark.parametrize(
    "bad",
    [
        "1e30", "1E+30", "１２３", "1_000", " 12 ", "12 ", "+5", "-5", "1.5", "", "00", "0x10",
        "9" * 79, str(MAX + 1), 5, 1e21, 1.5, None, True, b"12",
    ],
)  # fmt: skip
def test_wei_text_rejects_everything_else(bad: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_wei_text(bad)


@pytest.mark.parametrize("bad", ["1e6", "1.00", "-1", "", 100, None])
def test_usd_micros_text_rejects_non_digits(bad: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_usd_micros_text(bad)


def test_eth_is_formatted_from_integers_without_rounding() -> None:
    assert format_eth(0) == "0 ETH"
    assert format_eth(1) == "0.000000000000000001 ETH"
    assert format_eth(10**18) == "1 ETH"
    assert format_eth(1_234_500_000_000_000_000) == "1.2345 ETH"
    assert format_eth(10**30 + 1) == "1,000,000,000,000.000000000000000001 ETH"
    # 2**256-1 wei: every digit kept (a float would print 1.157920892373162e+59).
    assert format_eth(MAX).replace(",", "").replace(" ETH", "").replace(".", "") == str(MAX)
    assert format_eth(1_234_567_000_000_000_001, places=6) == "≈1.234567 ETH"
    assert format_eth(1_234_567_000_000_000_000, places=6) == "1.234567 ETH"


def test_usd_and_wei_formats() -> None:
    assert format_usd_micros(0) == "$0.00"
    assert format_usd_micros(1) == "$0.000001"
    assert format_usd_micros(3_500_010) == "$3.50001"
    assert format_usd_micros(1_234_560_000) == "$1,234.56"
    assert format_usd_micros(-120_000) == "-$0.12"
    assert format_wei(10**18) == "1,000,000,000,000,000,000 wei"


def test_ratio_rounds_up_to_a_whole_wei() -> None:
    assert apply_ratio(10, 6, 5) == 12
    assert apply_ratio(11, 6, 5) == 14  # 13.2 → 14
    assert apply_ratio(MAX, 1, 1) == MAX
    with pytest.raises(ValueError):
        apply_ratio(1, 1, 0)


def test_chart_heights_are_exact_for_huge_values_and_labels_escaped() -> None:
    svg = bar_chart_svg(
        [ChartPoint("<b>", MAX), ChartPoint("half", MAX // 2), ChartPoint("one", 1)],
        title="usage & more",
    )
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
    assert 'height="156"' in svg
    assert 'height="77"' in svg
    assert 'height="1"' in svg  # non-zero stays visible
    assert "No usage" in bar_chart_svg([], title="t")


@pytest.mark.django_db
@pytest.mark.parametrize("amount", BIG)
def test_big_wei_round_trips_through_account_and_ledger(
    amount: int, make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    grant(user, amount, key=f"rt-{amount}")
    account = Account.objects.get(pk=user.pk)
    entry = LedgerEntry.objects.get(account=account)
    assert type(account.balance_micros) is int
    assert account.balance_micros == amount
    assert entry.amount_micros == amount
    assert entry.balance_after_micros == amount
    assert LedgerEntry.objects.filter(amount_micros=amount).count() == 1


@pytest.mark.django_db
def test_sums_and_comparisons_are_exact_on_this_database(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    users = [make_user() for _ in range(3)]
    grant(users[0], MAX, key="a")
    grant(users[1], MAX - 1, key="b")
    grant(users[2], 9, key="c")
    grant(users[2], 10, key="d")

    total = LedgerEntry.objects.aggregate(total=WeiSum("amount_micros"))["total"]
    assert total == MAX + (MAX - 1) + 19  # beyond 2**256: no overflow, no float
    per_user = dict(
        LedgerEntry.objects.values_list("account_id").annotate(total=WeiSum("amount_micros"))
    )
    assert per_user == {users[0].pk: MAX, users[1].pk: MAX - 1, users[2].pk: 19}
    assert LedgerEntry.objects.filter(amount_micros__gt=9).count() == 3  # "10" > "9" numerically
    assert set(
        Account.objects.filter(balance_micros__gte=MAX - 1).values_list("pk", flat=True)
    ) == {
        users[0].pk,
        users[1].pk,
    }
    ordered = list(
        Account.objects.order_by("balance_micros").values_list("balance_micros", flat=True)
    )
    assert ordered == [19, MAX - 1, MAX]
    assert LedgerEntry.objects.filter(amount_micros=10**30).aggregate(
        t=WeiSum("amount_micros")
    ) == {"t": None}


@pytest.mark.django_db(transaction=True)
def test_database_refuses_held_above_balance(
    make_user: Callable[..., User], plans: dict[str, Plan]
) -> None:
    user = make_user()
    account_open(user_id=user.pk)
    grant(user, MAX - 1)
    account = Account.objects.get(pk=user.pk)
    account.held_micros = MAX  # one wei more than the balance: only an exact compare sees it
    with pytest.raises(IntegrityError), transaction.atomic():
        account.save(update_fields=["held_micros"])
    assert Account.objects.get(pk=user.pk).held_micros == 0
    assert connection.vendor in {"sqlite", "postgresql"}


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("BILLING_ESTIMATED_FEE_WEI", "5e12", "billing.E001"),
        ("BILLING_LOW_BALANCE_THRESHOLDS_MICROS", ["1_000"], "billing.E002"),
        ("BILLING_ETH_USD_RATE", "3e3", "billing.E003"),
        ("BILLING_ETH_USD_RATE", "-1", "billing.E003"),
        ("BILLING_UNKNOWN_HOLD_TIMEOUT_SECONDS", 0, "billing.E005"),
    ],
)
def test_bad_billing_settings_fail_the_system_check(
    settings: Any, name: str, value: object, check_id: str
) -> None:
    from billing.checks import check_billing_settings

    assert check_billing_settings() == []
    setattr(settings, name, value)
    assert [error.id for error in check_billing_settings()] == [check_id]


@pytest.mark.django_db
def test_unknown_default_plan_fails_the_system_check(settings: Any) -> None:
    from billing.checks import check_billing_settings

    settings.BILLING_DEFAULT_PLAN = "platinum"
    assert [error.id for error in check_billing_settings()] == ["billing.E004"]


def test_format_usd_shows_cents_and_sub_cent_digits_only_below_a_cent() -> None:
    assert format_usd(0) == "$0.00"
    assert format_usd(1) == "$0.000001"
    assert format_usd(4_200) == "$0.0042"
    assert format_usd(9_999) == "$0.009999"
    assert format_usd(10_000) == "$0.01"
    assert format_usd(17_167) == "$0.02"  # half up
    assert format_usd(14_999) == "$0.01"
    assert format_usd(12_345_678) == "$12.35"
    assert format_usd(12_345_678, round_down=True) == "$12.34"
    assert format_usd(1_234_560_000) == "$1,234.56"
    assert format_usd(-17_167) == "-$0.02"
    assert usd_decimal(17_167) == "0.017167"
    assert usd_decimal(12_000_000) == "12.000000"


@pytest.mark.parametrize(
    ("typed", "micros"),
    [("12.50", 12_500_000), ("$0.25", 250_000), (" 5 ", 5_000_000), (".5", 500_000),
     ("0.000001", 1), ("$ 3", 3_000_000)],
)  # fmt: skip
def test_parse_usd_amount_takes_dollars_and_cents(typed: str, micros: int) -> None:
    assert parse_usd_amount(typed) == micros


@pytest.mark.parametrize(
    "bad",
    ["", " ", "$", ".", "1e3", "1,000", "1_000", "-1", "+1", "１２", "1.2.3", "0.0000001", 12],
)
def test_parse_usd_amount_refuses_what_is_not_dollars(bad: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_usd_amount(bad)


def test_parse_usd_amount_says_too_large() -> None:
    with pytest.raises(MoneyParseError, match="too large: at most \\$100.00"):
        parse_usd_amount("100.01", maximum=100_000_000)


def test_breakable_lets_long_figures_wrap_between_digit_groups_and_escapes() -> None:
    from billing.templatetags.billing_extras import breakable

    assert breakable("1,234.5 ETH") == "1,<wbr>234.<wbr>5 ETH"
    assert breakable("<b>1,2</b>") == "&lt;b&gt;1,<wbr>2&lt;/b&gt;"
    assert breakable("") == ""
