"""Merchant mode: the user's pymthouse wallet, mirrored into the local ledger.

In ``BILLING_MODE=merchant`` pymthouse's wallet is the user's balance (pymthouse
grants a top-up after Stripe's webhook and takes the network fees from it;
pymthouse/pymthouse@5ee7cfc7 ``src/app/api/v1/apps/[id]/billing/wallet/route.ts``).
pymthouse never calls us back, so the product reads ``GET …/billing/wallet`` and
copies what changed, each change once (docs/billing.md "Merchant mode"):

* **Credit.** ``lifetimeGrantedUsdMicros`` only grows. Its growth since the last read
  is one ``wallet_credit`` entry keyed on the new counter value
  (``wallet-granted:<user>:<value>``): two readers of the same value write one entry.
* **Consumption.** ``consumedUsdMicros`` only grows too, but most of it is already in
  the ledger: local settlement debits each image's network fee at payment time
  (``usage_debit``, in USD at the metered rate), and an image still in flight holds
  its ceiling. What pymthouse consumed beyond what those explain (usage debits −
  refunds + earlier ``wallet_debit`` entries + open holds, all after the mirror's
  baseline) is one ``wallet_debit``. When pymthouse lags behind local debits nothing
  is credited back.
* **State.** ``billingState`` (``canSpend``, ``status``, ``reason``) is copied onto
  the ``MerchantWallet`` row; admission respects it (``billing.plan_policy``).

Reads happen on the return page's polls, on a beat task, and before admission when
the copy is older than ``BILLING_WALLET_MAX_AGE_SECONDS``. The HTTP call is made
outside any transaction; the copy is applied under the account row lock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from billing.db import WeiSum
from billing.lock_objects import account_lock
from billing.merchant_errors import MerchantRefusal, merchant_refusal, staff_report
from billing.models import (
    EntryEffect,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    MerchantWallet,
    PendingTopUp,
    TopUpStatus,
)
from billing.money import format_usd
from billing.services.ledger import ledger_entry_append
from integrations.pymthouse import PymthouseError, get_client

logger = logging.getLogger(__name__)

#: ``usage_ref`` of the credits that give back what the plan's included usage paid.
INCLUDED_USAGE_REF = "pymthouse:included-usage"


def merchant_mode() -> bool:
    return bool(settings.BILLING_MODE == "merchant")


@dataclass(frozen=True)
class WalletReading:
    """What one read of pymthouse's wallet said (counters ``None``: billing is off
    there, ``balance: null``)."""

    granted_micros: int | None
    consumed_micros: int | None
    balance_micros: int | None
    can_spend: bool
    status: str
    reason: str
    has_payment_method: bool | None
    #: ``billingState.subject``: ``end_user`` + ``merchant`` when the app is configured
    #: as this product expects; ``owner`` means the read is the operator's shared wallet.
    subject_type: str = "end_user"
    subject_billing_mode: str = "merchant"
    #: ``funding.includedUsage``: what the plan's included usage paid this calendar
    #: month (``consumed``) and when that month ends (``resetsAt``, its key).
    included_consumed_micros: int = 0
    included_period: str = ""


def wallet_read(*, external_user_id: str) -> WalletReading:
    """Read the user's wallet and billing state from pymthouse (HTTP; raises
    ``PymthouseError``)."""
    wallet = get_client().wallet_get(external_user_id=external_user_id)
    state = wallet.billing_state
    balance = wallet.balance
    return WalletReading(
        granted_micros=None if balance is None else balance.lifetime_granted_usd_micros,
        consumed_micros=None if balance is None else balance.consumed_usd_micros,
        balance_micros=None if balance is None else balance.usd_micros,
        can_spend=state.can_spend,
        status=state.status,
        reason=state.reason or "",
        has_payment_method=wallet.payment_method.has_default,
        subject_type=state.subject.type,
        subject_billing_mode=state.subject.billing_mode,
        included_consumed_micros=state.funding.included_usage.consumed.usd_micros,
        included_period=state.funding.included_usage.resets_at.date().isoformat(),
    )


def _explained_micros(*, wallet: MerchantWallet) -> int:
    """pymthouse consumption the ledger already accounts for (see the module doc)."""
    sums = LedgerEntry.objects.filter(
        account_id=wallet.account_id, pk__gt=wallet.ledger_baseline_id
    ).aggregate(
        debited=WeiSum(
            "amount_micros",
            filter=Q(kind__in=(EntryKind.USAGE_DEBIT, EntryKind.WALLET_DEBIT)),
        ),
        refunded=WeiSum("amount_micros", filter=Q(kind=EntryKind.REFUND)),
        included=WeiSum(
            "amount_micros",
            filter=Q(kind=EntryKind.WALLET_CREDIT, usage_ref=INCLUDED_USAGE_REF),
        ),
    )
    held = Hold.objects.filter(account_id=wallet.account_id, status=HoldStatus.OPEN).aggregate(
        held=WeiSum("amount_micros")
    )
    return (
        (sums["debited"] or 0)
        - (sums["refunded"] or 0)
        - (sums["included"] or 0)
        + (held["held"] or 0)
    )


def _wallet_locked(*, user_id: int) -> MerchantWallet:
    """The user's wallet copy under the account lock, created with its baseline (every
    entry already in the ledger predates the mirror and explains no pymthouse usage)."""
    account = account_lock(user_id=user_id)
    wallet = MerchantWallet.objects.filter(account=account).first()
    if wallet is None:
        last = LedgerEntry.objects.filter(account=account).order_by("-pk").first()
        wallet = MerchantWallet.objects.create(
            account=account, ledger_baseline_id=last.pk if last is not None else 0
        )
    wallet.account = account
    return wallet


@transaction.atomic
def wallet_mirror_apply(*, user_id: int, reading: WalletReading) -> MerchantWallet:
    """Copy one reading into the ledger and the wallet row; idempotent (see module doc)."""
    wallet = _wallet_locked(user_id=user_id)
    account = wallet.account
    granted = reading.granted_micros
    if granted is not None and granted > wallet.granted_micros:
        ledger_entry_append(
            account=account,
            kind=EntryKind.WALLET_CREDIT,
            effect=EntryEffect.CREDIT,
            amount_micros=granted - wallet.granted_micros,
            reason="Credit bought through pymthouse checkout",
            idempotency_key=f"wallet-granted:{user_id}:{granted}",
        )
        wallet.granted_micros = granted
    elif granted is not None and granted < wallet.granted_micros:
        logger.warning(
            "billing: pymthouse lifetimeGrantedUsdMicros of user %s went back from %s to %s; "
            "nothing debited",
            user_id,
            wallet.granted_micros,
            granted,
        )
    _included_mirror(wallet=wallet, reading=reading)
    consumed = reading.consumed_micros
    if consumed is not None and consumed > wallet.consumed_micros:
        wallet.consumed_micros = consumed
    explained = _explained_micros(wallet=wallet)
    excess = wallet.consumed_micros - explained
    if excess > 0:
        available = account.available_micros
        amount = min(excess, available)
        if amount < excess:
            logger.warning(
                "billing: pymthouse consumed %s µUSD for user %s beyond the ledger; only %s "
                "available now, the rest is debited when credit arrives",
                excess,
                user_id,
                amount,
            )
        if amount > 0:
            ledger_entry_append(
                account=account,
                kind=EntryKind.WALLET_DEBIT,
                effect=EntryEffect.DEBIT,
                amount_micros=amount,
                reason=f"Network usage charged by pymthouse ({format_usd(amount)})",
                idempotency_key=f"wallet-consumed:{user_id}:{wallet.consumed_micros}:{explained}",
            )
    wallet.upstream_balance_micros = max(reading.balance_micros or 0, 0)
    wallet.can_spend = reading.can_spend
    wallet.status = reading.status[:32]
    wallet.reason = reading.reason[:64]
    wallet.has_payment_method = reading.has_payment_method
    wallet.refreshed_at = timezone.now()
    wallet.save(
        update_fields=[
            "granted_micros",
            "consumed_micros",
            "included_period",
            "included_consumed_micros",
            "upstream_balance_micros",
            "can_spend",
            "status",
            "reason",
            "has_payment_method",
            "refreshed_at",
        ]
    )
    credited = _credited_top_ups(wallet=wallet)
    if credited:
        PendingTopUp.objects.filter(pk__in=credited).update(
            status=TopUpStatus.CREDITED, resolved_at=timezone.now()
        )
    return wallet


def _included_mirror(*, wallet: MerchantWallet, reading: WalletReading) -> None:
    """Give back what the plan's included usage paid (its ``consumed`` this month grows):
    the local settlement debited those fees, pymthouse took them from the allowance, not
    from the wallet. Keyed on the month and the counter value."""
    if not reading.included_period:
        return
    seen = (
        wallet.included_consumed_micros if wallet.included_period == reading.included_period else 0
    )
    value = reading.included_consumed_micros
    if value > seen:
        ledger_entry_append(
            account=wallet.account,
            kind=EntryKind.WALLET_CREDIT,
            effect=EntryEffect.CREDIT,
            amount_micros=value - seen,
            reason="Network usage covered by your plan's included usage",
            idempotency_key=(
                f"wallet-included:{wallet.account_id}:{reading.included_period}:{value}"
            ),
            usage_ref=INCLUDED_USAGE_REF,
        )
    if wallet.included_period != reading.included_period or value > seen:
        wallet.included_period = reading.included_period
        wallet.included_consumed_micros = max(value, seen)


def _credited_top_ups(*, wallet: MerchantWallet) -> list[uuid.UUID]:
    """The pending top-ups the granted counter now covers, oldest first, each taking its
    own amount of the growth: two checkouts open at once are not both shown as credited
    by the first one that lands."""
    credited = []
    covered = 0
    for top_up in PendingTopUp.objects.filter(
        account_id=wallet.account_id, status=TopUpStatus.PENDING
    ).order_by("created_at", "pk"):
        needed = max(top_up.granted_before_micros, covered) + top_up.amount_micros
        if wallet.granted_micros < needed:
            break
        credited.append(top_up.pk)
        covered = needed
    return credited


@transaction.atomic
def wallet_error_record(*, user_id: int, refusal: MerchantRefusal) -> None:
    """Keep pymthouse's last refusal on the user's wallet row, for staff (the admin)."""
    wallet = _wallet_locked(user_id=user_id)
    wallet.last_error = refusal.staff_message[:500]
    wallet.last_error_at = timezone.now()
    wallet.save(update_fields=["last_error", "last_error_at"])


def wallet_refresh(*, user: User) -> MerchantWallet | MerchantRefusal:
    """Read pymthouse's wallet for ``user`` and mirror it; a refusal is returned (and
    reported to staff), never raised. Must not run inside a transaction (HTTP)."""
    try:
        reading = wallet_read(external_user_id=user.external_user_id)
    except PymthouseError as exc:
        refusal = merchant_refusal(exc, action="wallet read")
        staff_report(refusal, user_id=user.pk)
        wallet_error_record(user_id=user.pk, refusal=refusal)
        return refusal
    if reading.subject_type != "end_user" or reading.subject_billing_mode != "merchant":
        # An owner_rollup app answers with the operator's shared wallet: never mirror it
        # as this user's balance (pymthouse-billing §2.3, "Wallet / state subject").
        refusal = MerchantRefusal(
            "owner_wallet_not_app_user",
            "Payments are not available for this service. Nothing was charged.",
            "pymthouse wallet read: the answer is the app owner's wallet (subject "
            f"{reading.subject_type}, mode {reading.subject_billing_mode}); the pymthouse app "
            "is not in merchant mode while BILLING_MODE=merchant",
        )
        staff_report(refusal, user_id=user.pk)
        wallet_error_record(user_id=user.pk, refusal=refusal)
        return refusal
    return wallet_mirror_apply(user_id=user.pk, reading=reading)


def wallet_refresh_if_stale(*, user_id: int) -> None:
    """Before admission and on /generate/: re-read the wallet when the local copy is
    older than ``BILLING_WALLET_MAX_AGE_SECONDS`` (merchant mode only). A failed read
    leaves the old copy in force (the local holds still cap what images may spend)."""
    if not merchant_mode():
        return
    wallet = MerchantWallet.objects.filter(account_id=user_id).first()
    fresh_after = timezone.now() - timedelta(seconds=settings.BILLING_WALLET_MAX_AGE_SECONDS)
    if wallet is not None and wallet.refreshed_at is not None and wallet.refreshed_at > fresh_after:
        return
    user = User.objects.filter(pk=user_id).first()
    if user is not None:
        wallet_refresh(user=user)


def merchant_wallets_refresh(*, limit: int) -> int:
    """Beat: re-read the wallets with a top-up pending first, then the least recently
    read ones, up to ``limit``; returns how many were read successfully."""
    if not merchant_mode():
        return 0
    pending = list(
        PendingTopUp.objects.filter(status=TopUpStatus.PENDING)
        .values_list("account_id", flat=True)
        .distinct()[:limit]
    )
    rest = list(
        MerchantWallet.objects.exclude(account_id__in=pending)
        .order_by("refreshed_at")
        .values_list("account_id", flat=True)[: max(limit - len(pending), 0)]
    )
    done = 0
    for user in User.objects.filter(pk__in=[*pending, *rest]):
        if isinstance(wallet_refresh(user=user), MerchantWallet):
            done += 1
    return done
