"""Reads of the billing app (views and admin build their context from these)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import hooks
from billing.charts import ChartPoint
from billing.db import WeiSum, values_in
from billing.errors import CreditRefusedError
from billing.hooks import images_per_day, images_this_month
from billing.models import (
    Account,
    EntryEffect,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Plan,
    PromotionalCredit,
)
from billing.money import format_usd
from billing.plan_policy import plan_policy
from billing.rates import rate_now
from billing.services.ledger import promotion_spend_order
from billing.services.low_balance import low_balance_level
from billing.services.pricing import max_fee_estimates
from billing.services.subscriptions import PlanChangeError, PlanChangeQuote, plan_change_quote


@dataclass(frozen=True)
class LedgerTotals:
    balance_micros: int
    held_micros: int


def account_ledger_totals(*, account: Account) -> LedgerTotals:
    """Balance and held recomputed from the entries (exact sums); equals the account row."""
    sums = LedgerEntry.objects.filter(account=account).aggregate(
        credit=WeiSum("amount_micros", filter=Q(effect=EntryEffect.CREDIT)),
        debit=WeiSum("amount_micros", filter=Q(effect=EntryEffect.DEBIT)),
        hold=WeiSum("amount_micros", filter=Q(effect=EntryEffect.HOLD)),
        release=WeiSum("amount_micros", filter=Q(effect=EntryEffect.RELEASE)),
    )
    value = {key: sums[key] or 0 for key in sums}
    return LedgerTotals(
        balance_micros=value["credit"] - value["debit"],
        held_micros=value["hold"] - value["release"],
    )


def account_entries(*, account: Account) -> QuerySet[LedgerEntry]:
    return (
        LedgerEntry.objects.filter(account=account)
        .select_related("actor", "promotional_credit")
        .order_by("-id")
    )


def entry_promotion(entry: LedgerEntry) -> PromotionalCredit | None:
    """The promotional lot ``entry`` granted, if it is promotional credit."""
    try:
        return entry.promotional_credit
    except PromotionalCredit.DoesNotExist:
        return None


@dataclass(frozen=True)
class PromotionLot:
    remaining_micros: int
    expires_at: datetime | None


@dataclass(frozen=True)
class CreditSplit:
    """The balance as promotional and purchased credit (purchased: everything else)."""

    #: Promotional credit still usable now (open lots not past their expiry).
    promotional_micros: int
    #: The balance less every open promotional lot (spent after promotional credit).
    purchased_micros: int
    #: The usable lots, in the order they are spent (earliest expiry first).
    lots: list[PromotionLot]


def account_credit_split(*, account: Account, now: datetime | None = None) -> CreditSplit:
    """Promotional credit (and when each part expires) beside purchased credit. A lot
    past its expiry whose take-back has not been written yet counts as neither."""
    now = now or timezone.now()
    open_lots = list(
        PromotionalCredit.objects.filter(account=account, closed_at__isnull=True)
        .order_by(*promotion_spend_order())
        .values_list("remaining_micros", "expires_at")
    )
    usable = [
        PromotionLot(remaining_micros=remaining, expires_at=expires)
        for remaining, expires in open_lots
        if remaining and (expires is None or expires > now)
    ]
    return CreditSplit(
        promotional_micros=sum(lot.remaining_micros for lot in usable),
        purchased_micros=account.balance_micros - sum(remaining for remaining, _ in open_lots),
        lots=usable,
    )


def account_activity(*, account: Account) -> QuerySet[LedgerEntry]:
    """The entries a person reads: every movement of the balance, plus the holds still
    open. A finished image's hold and its return moved no money (they only set credit
    aside while it ran), so they are left out here; the CSV and the API keep them."""
    resolved = Hold.objects.filter(account=account).exclude(status=HoldStatus.OPEN)
    return (
        account_entries(account=account)
        .exclude(kind=EntryKind.HOLD_RELEASE)
        .exclude(kind=EntryKind.HOLD, generation_id__in=resolved.values("generation_id"))
    )


@dataclass(frozen=True)
class Allowance:
    limit: int | None
    used: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


def account_allowance(*, account: Account) -> Allowance | None:
    """This month's image count against the plan's allowance or cap (counted plans)."""
    plan = account.plan
    policy = plan_policy(plan)
    if not policy.counts_images:
        return None
    return Allowance(limit=policy.monthly_limit(plan), used=images_this_month(owner_id=account.pk))


@dataclass(frozen=True)
class PlanDisplay:
    """What the pages show of an account's plan (templates never compare plan types)."""

    name: str
    #: Prepaid credit: show balance, held and available.
    shows_credit: bool
    #: A monthly allowance or cap: show the count.
    shows_allowance: bool
    #: A subscription period: show whether it is active.
    shows_subscription: bool


def plan_display(*, account: Account) -> PlanDisplay:
    policy = plan_policy(account.plan)
    return PlanDisplay(
        name=account.plan.name,
        shows_credit=policy.charges,
        shows_allowance=policy.counts_images,
        shows_subscription=policy.has_subscription,
    )


@dataclass(frozen=True)
class ImageQuote:
    """What the next image costs this user, said before they press Generate."""

    model_id: str
    #: The most one image costs (its hold) on a charging plan, USD micros.
    price_micros: int | None
    #: Images left this month on a counted plan (``None``: no monthly limit).
    remaining: int | None
    available_micros: int | None
    affordable: bool
    #: One line for the button's neighbourhood: "Up to $0.02 per image", "Free · 18 left".
    text: str
    #: Why the next image would be refused, in words ("" when it would not).
    refusal: str
    refusal_code: str


def image_quote(*, account: Account, model_id: str) -> ImageQuote:
    """``image_quotes`` for one model."""
    return image_quotes(account=account, model_ids=[model_id])[model_id]


def image_quotes(*, account: Account, model_ids: list[str]) -> dict[str, ImageQuote]:
    """The price (or allowance) of the next image of each model, and whether it would be
    admitted now: the same policy and hold arithmetic admission uses, at the rate in force
    now. Reads only (no lock, no hold); the count, the rate and the prices are read once
    for all models."""
    plan = account.plan
    policy = plan_policy(plan)
    used = images_this_month(owner_id=account.pk) if policy.counts_images else 0
    refusal = policy.refusal(
        account=account, plan=plan, images_this_month=used + 1, now=timezone.now()
    )
    if account.suspended:
        refusal = CreditRefusedError("Your account is suspended.", code="account_suspended")
    if not policy.charges:
        limit = policy.monthly_limit(plan) if policy.counts_images else None
        remaining = None if limit is None else max(limit - used, 0)
        text = "Free" if not policy.has_subscription else "Included in your plan"
        if remaining is not None:
            text += f" · {remaining} left this month"
        return {
            model_id: _quote(
                model_id,
                price=None,
                available=None,
                text=text,
                remaining=remaining,
                refusal=refusal,
            )  # fmt: skip
            for model_id in model_ids
        }
    usd_per_eth = rate_now().usd_per_eth
    fees = max_fee_estimates(model_ids=model_ids)
    available = account.available_micros
    quotes = {}
    for model_id in model_ids:
        price = policy.charge(plan, fee_wei=fees[model_id], usd_per_eth=usd_per_eth)
        refused = refusal
        if refused is None and price > available:
            refused = CreditRefusedError(
                f"This image costs up to {format_usd(price)} and you have "
                f"{format_usd(available, round_down=True)} available. Add credit to keep "
                "generating.",
                code="insufficient_credit",
            )
        exact = policy.flat_price(plan) is not None
        text = f"{format_usd(price)} per image" if exact else f"Up to {format_usd(price)} per image"
        quotes[model_id] = _quote(
            model_id, price=price, available=available, text=text, remaining=None, refusal=refused
        )
    return quotes


def _quote(
    model_id: str,
    *,
    price: int | None,
    available: int | None,
    text: str,
    remaining: int | None,
    refusal: CreditRefusedError | None,
) -> ImageQuote:
    return ImageQuote(
        model_id=model_id,
        price_micros=price,
        remaining=remaining,
        available_micros=available,
        affordable=refusal is None,
        text=text,
        refusal="" if refusal is None else refusal.message,
        refusal_code="" if refusal is None else refusal.code,
    )


def low_balance_threshold(*, account: Account) -> int | None:
    """The lowest configured threshold the available balance is at or below, if any
    (plans that charge per image only)."""
    if not plan_policy(account.plan).charges:
        return None
    return low_balance_level(available_micros=account.available_micros)


@dataclass(frozen=True)
class LowBalance:
    threshold_micros: int
    available_micros: int


def low_balance_notice(*, account: Account) -> LowBalance | None:
    """What the low-balance notices say (/generate/, /billing/, the API), or ``None``."""
    threshold = low_balance_threshold(account=account)
    if threshold is None:
        return None
    return LowBalance(threshold_micros=threshold, available_micros=account.available_micros)


def account_daily_usage(
    *, account: Account, days: int = 30, today: date | None = None
) -> list[ChartPoint]:
    """Usage debits per UTC day for the last ``days`` days, zero-filled, exact."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    since = datetime(start.year, start.month, start.day, tzinfo=timezone.get_current_timezone())
    rows = (
        LedgerEntry.objects.filter(
            account=account, kind=EntryKind.USAGE_DEBIT, created_at__gte=since
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=WeiSum("amount_micros"))
        .order_by()
    )
    by_day = {row["day"]: row["total"] or 0 for row in rows}
    return [
        ChartPoint(
            label=(start + timedelta(days=i)).strftime("%m-%d"),
            value=by_day.get(start + timedelta(days=i), 0),
        )
        for i in range(days)
    ]


def account_daily_images(
    *, account: Account, days: int = 30, today: date | None = None
) -> list[ChartPoint]:
    """Images admitted per UTC day for the last ``days`` days, zero-filled (every plan)."""
    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    counts = images_per_day(owner_id=account.pk, since=start)
    return [
        ChartPoint(
            label=(start + timedelta(days=i)).strftime("%m-%d"),
            value=counts.get(start + timedelta(days=i), 0),
        )
        for i in range(days)
    ]


#: Entries with a printable receipt: credits, and subscription fees paid by card.
_HAS_RECEIPT = Q(effect=EntryEffect.CREDIT) | Q(
    kind=EntryKind.SUBSCRIPTION_FEE, idempotency_key__startswith="subscription_fee:payment:"
)


def _paid_fee(entry: LedgerEntry) -> bool:
    return entry.kind == EntryKind.SUBSCRIPTION_FEE and (entry.idempotency_key or "").startswith(
        "subscription_fee:payment:"
    )


def receipt_entry(*, account: Account, entry_id: int) -> LedgerEntry | None:
    """An entry of ``account`` that has a receipt (a credit: a grant, a refund, a credit
    correction, a purchase; or a subscription fee paid by card), or ``None``: another
    user's entry is indistinguishable from none."""
    return (
        LedgerEntry.objects.filter(account=account, pk=entry_id)
        .filter(_HAS_RECEIPT)
        .select_related("account__user")
        .first()
    )


@dataclass(frozen=True)
class EntryDisplay:
    """One ledger entry as its owner reads it: a signed amount in dollars, what it was."""

    entry: LedgerEntry
    what: str
    reason: str
    #: "+", "−" or "" (holds move money aside, not out; records move nothing)
    sign: str
    #: The change to the available balance: holds show as "−", releases as "+".
    affects_available: bool
    #: Credits (grants, refunds, purchases) have a printable receipt.
    has_receipt: bool = False
    #: Promotional credit: "promotional"; any other credit: "purchased"; else "".
    credit_type: str = ""
    #: When promotional credit expires (``None``: never, or not promotional).
    expires_at: datetime | None = None
    #: Its image still exists (only then is it linked; ``entries_display``).
    generation_exists: bool = False


_WHAT: dict[str, str] = {
    EntryKind.GRANT: "Credit added",
    EntryKind.DEDUCT: "Credit removed",
    EntryKind.HOLD: "Held",
    EntryKind.HOLD_RELEASE: "Hold returned",
    EntryKind.USAGE_DEBIT: "Image charge",
    EntryKind.SUBSCRIPTION_FEE: "Subscription",
    EntryKind.CORRECTION: "Correction",
    EntryKind.PROMOTION: "Promotional credit added",
    EntryKind.PROMOTION_EXPIRY: "Promotional credit expired",
    EntryKind.WALLET_CREDIT: "Credit from pymthouse",
    EntryKind.WALLET_DEBIT: "Network usage charged by pymthouse",
}


def entry_display(entry: LedgerEntry) -> EntryDisplay:
    signs: dict[str, str] = {
        EntryEffect.CREDIT: "+",
        EntryEffect.DEBIT: "−",
        EntryEffect.HOLD: "−",
        EntryEffect.RELEASE: "+",
    }
    sign = signs.get(entry.effect, "")
    promotion = entry_promotion(entry) if entry.effect == EntryEffect.CREDIT else None
    credit_type = ""
    if entry.effect == EntryEffect.CREDIT:
        credit_type = "promotional" if promotion is not None else "purchased"
    what = _WHAT.get(entry.kind, entry.get_kind_display())
    if promotion is not None:
        what = _WHAT[EntryKind.PROMOTION]  # the demo seed's grants of before 0014, too
    return EntryDisplay(
        has_receipt=entry.effect == EntryEffect.CREDIT or _paid_fee(entry),
        credit_type=credit_type,
        expires_at=promotion.expires_at if promotion is not None else None,
        entry=entry,
        what=what,
        reason=entry.reason,
        sign=sign,
        affects_available=entry.effect in (EntryEffect.HOLD, EntryEffect.RELEASE),
    )


def entries_display(entries: Iterable[LedgerEntry]) -> list[EntryDisplay]:
    """``entry_display`` of each, knowing which images still exist (one question to the
    ``billing.hooks`` checker for the lot): a deleted image's rows keep their text and
    stop linking to it."""
    rows = [entry_display(entry) for entry in entries]
    existing = hooks.generations_existing(
        generation_ids={row.entry.generation_id for row in rows if row.entry.generation_id}
    )
    return [
        replace(row, generation_exists=row.entry.generation_id in existing)
        if row.entry.generation_id
        else row
        for row in rows
    ]


def generation_charge(*, generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The usage debit of one image, if it was charged."""
    return LedgerEntry.objects.filter(
        generation_id=generation_id, kind=EntryKind.USAGE_DEBIT
    ).first()


def generation_refund(*, generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The refund of one image the network did not deliver, if it was refunded."""
    return LedgerEntry.objects.filter(generation_id=generation_id, kind=EntryKind.REFUND).first()


def generation_held_micros(*, generation_id: uuid.UUID | str) -> int | None:
    """What an image's open hold keeps back (the most it may cost), or None: no hold, or
    it was charged or released."""
    held = (
        Hold.objects.filter(generation_id=generation_id, status=HoldStatus.OPEN)
        .values_list("amount_micros", flat=True)
        .first()
    )
    return None if held is None else int(held)


@dataclass(frozen=True)
class GenerationMoney:
    """What one image holds, was charged and was refunded (exact; ``None`` = none).

    ``held_micros`` is the hold taken at admission: the most the image may cost, quoted
    before it was queued. ``charged_micros`` is its usage debit, written at payment time
    (``generation_charge_settle``) or by the usage mirror; ``charged_fee_wei`` and
    ``eth_usd_rate`` are the network fee and the rate it was converted at.
    """

    held_micros: int | None = None
    hold_status: str | None = None
    max_fee_wei: int | None = None
    charged_micros: int | None = None
    charged_fee_wei: int | None = None
    eth_usd_rate: str = ""
    refunded_micros: int | None = None


def generations_money(
    *, generation_ids: list[uuid.UUID], never_paid: frozenset[uuid.UUID] = frozenset()
) -> dict[uuid.UUID, GenerationMoney]:
    """:class:`GenerationMoney` of each of ``generation_ids`` (two queries for them all).

    ``never_paid``: the caller knows these never claimed a payment, so no charge or
    refund can exist for them (both follow a claim: ``services.holds``); their ledger is
    not read, and with all of them so, the second query is skipped.
    """
    found: dict[uuid.UUID, dict[str, object]] = {pk: {} for pk in generation_ids}
    for hold in Hold.objects.filter(generation_id__in=generation_ids):
        found[hold.generation_id].update(
            held_micros=int(hold.amount_micros),
            hold_status=hold.status,
            max_fee_wei=None if hold.max_fee_wei is None else int(hold.max_fee_wei),
        )
    charged_ids = [pk for pk in generation_ids if pk not in never_paid]
    if not charged_ids:
        return {pk: GenerationMoney(**values) for pk, values in found.items()}  # type: ignore[arg-type]
    entries = LedgerEntry.objects.filter(
        generation_id__in=charged_ids, kind__in=[EntryKind.USAGE_DEBIT, EntryKind.REFUND]
    ).order_by("pk")
    for entry in entries:
        values = found[entry.generation_id]  # type: ignore[index]
        if entry.kind == EntryKind.USAGE_DEBIT and "charged_micros" not in values:
            values.update(
                charged_micros=int(entry.amount_micros),
                charged_fee_wei=(
                    None if entry.network_fee_wei is None else int(entry.network_fee_wei)
                ),
                eth_usd_rate=entry.eth_usd_rate,
            )
        elif entry.kind == EntryKind.REFUND and "refunded_micros" not in values:
            values["refunded_micros"] = int(entry.amount_micros)
    return {pk: GenerationMoney(**values) for pk, values in found.items()}  # type: ignore[arg-type]


@dataclass(frozen=True)
class OpenHold:
    """An open hold, as the stale-hold sweep sees it."""

    hold_id: int
    generation_id: uuid.UUID
    user_id: int
    amount_micros: int
    created_at: datetime


def holds_open_stale(*, before: datetime, limit: int) -> list[OpenHold]:
    """Open holds placed before ``before``, at most ``limit``: least recently looked at by
    the sweep first (never looked at before anything), then oldest. A run is bounded, and
    the holds it leaves open go behind the ones it did not reach, so a crowd of
    unresolvable holds cannot starve a settleable one."""
    rows = (
        Hold.objects.filter(status=HoldStatus.OPEN, created_at__lt=before)
        .order_by(F("swept_at").asc(nulls_first=True), "created_at", "pk")
        .values_list("pk", "generation_id", "account_id", "amount_micros", "created_at")[:limit]
    )
    return [OpenHold(*row) for row in rows]


@dataclass(frozen=True)
class PlanOffer:
    """One plan on the Plans page: what it is, in dollars, and what moving to it does."""

    plan: Plan
    #: "20 free images a month", "$29.00 per 30 days, up to 500 images a month", …
    terms: str
    current: bool
    #: What a change to it does now (``None`` for the current plan or when refused).
    quote: PlanChangeQuote | None
    #: Why it cannot be chosen ("" when it can).
    refusal: str


def plan_terms(plan: Plan) -> str:
    """A plan's terms in one line, in the user's words and dollars."""
    policy = plan_policy(plan)
    if policy.has_subscription:
        cap = policy.monthly_limit(plan)
        terms = (
            f"{format_usd(plan.subscription_fee_micros)} per "
            f"{settings.BILLING_SUBSCRIPTION_PERIOD_DAYS} days"
        )
        return terms + (f", up to {cap} images a month" if cap else ", no monthly cap")
    if policy.counts_images:
        return f"{policy.monthly_limit(plan) or 0} free images a month"
    if plan.flat_price_micros is not None:
        return f"{format_usd(plan.flat_price_micros)} per image, from your credit"
    return f"Each image's network cost {plan.multiplier_text}, from your credit"


def plan_offers(*, account: Account) -> list[PlanOffer]:
    """The active plans, the current one first, each with what choosing it would do."""
    now = timezone.now()
    offers = []
    plans = sorted(
        Plan.objects.filter(Q(is_active=True) | Q(pk=account.plan_id)),
        key=lambda plan: (plan.pk != account.plan_id, plan.subscription_fee_micros, plan.name),
    )
    for plan in plans:
        quote, refusal = None, ""
        try:
            quote = plan_change_quote(account=account, plan=plan, now=now)
        except PlanChangeError as exc:
            refusal = exc.message
        offers.append(
            PlanOffer(
                plan=plan,
                terms=plan_terms(plan),
                current=plan.pk == account.plan_id,
                quote=quote,
                refusal=refusal,
            )
        )
    return offers


def generations_with_usage_charge_pending(
    *, generation_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``generation_ids`` a metered fee could still charge: a hold was placed and
    neither a usage debit nor a refund was recorded (the checks ``_settle`` makes first,
    in bulk). Stable: holds and ledger entries are never deleted, so an id left out here
    stays out; the settle itself re-checks under the account lock."""
    ids = sorted(generation_ids, key=lambda pk: pk.int)
    pending: set[uuid.UUID] = set()
    for offset in range(0, len(ids), 5000):
        held = set(
            Hold.objects.filter(
                generation_id__in=values_in(ids[offset : offset + 5000], uuids=True)
            ).values_list("generation_id", flat=True)
        )
        if not held:
            continue
        keys = [f"{prefix}:{pk}" for pk in held for prefix in ("usage_debit", "refund")]
        done = {
            uuid.UUID(key.split(":", 1)[1])
            for key in LedgerEntry.objects.filter(idempotency_key__in=keys).values_list(
                "idempotency_key", flat=True
            )
        }
        pending |= held - done
    return pending
