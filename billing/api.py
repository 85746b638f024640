"""JSON API for the signed-in user's billing account, mounted at /api/v1/billing/.

Wei amounts are JSON *strings* of digits (a JSON number above 2**53 is rounded by
most clients); ``CreditRefusedError`` anywhere in the API becomes a 402 through the
handler in ``config.api``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Field, Router, Schema

from accounts.api_auth import API_AUTH
from accounts.models import User
from billing.models import LedgerEntry
from billing.money import format_usd
from billing.selectors import (
    account_allowance,
    account_credit_split,
    account_entries,
    low_balance_notice,
)
from billing.services import account_open

router = Router(auth=API_AUTH, tags=["billing"])

LEDGER_PAGE_SIZE = 50


class AllowanceOut(Schema):
    limit: int | None
    used: int
    remaining: int | None


class LowBalanceOut(Schema):
    threshold_micros: str = Field(description="The lowest threshold crossed, USD micros")
    available_micros: str = Field(description="The available balance, USD micros")


class PromotionLotOut(Schema):
    remaining_micros: str = Field(description="USD micros left of this promotional credit")
    expires_at: datetime | None = Field(description="When what is left expires; null: never")


class AccountOut(Schema):
    plan: str
    plan_type: str
    balance_micros: str = Field(description="Exact USD micros (1 USD = 1,000,000), decimal string")
    held_micros: str = Field(description="USD micros held for images in progress")
    available_micros: str = Field(description="balance_micros - held_micros")
    available: str = Field(description="The available balance as shown: dollars and cents")
    suspended: bool
    allowance: AllowanceOut | None
    promotional_micros: str = Field(
        description="Promotional credit (staff grants), spent before purchased credit"
    )
    purchased_micros: str = Field(description="The rest of the balance: purchased credit")
    promotions: list[PromotionLotOut] = Field(description="Promotional credit by expiry")
    low_balance: LowBalanceOut | None = Field(
        description="Set while the available balance is at or below a low-balance threshold"
    )


class EntryOut(Schema):
    id: int
    created_at: datetime
    kind: str
    effect: str
    amount_micros: str = Field(description="USD micros, decimal string")
    balance_after_micros: str
    held_after_micros: str
    generation_id: UUID | None
    reason: str


class LedgerPageOut(Schema):
    items: list[EntryOut]
    next_before_id: int | None = Field(description="Pass as before_id for older entries")


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # API_AUTH: a bearer token or the session
    return user


@router.get("/account", response=AccountOut, summary="Your balance, holds and plan")
def account(request: HttpRequest) -> dict[str, Any]:
    acct = account_open(user_id=_user(request).pk)
    allowance = account_allowance(account=acct)
    split = account_credit_split(account=acct)
    low = low_balance_notice(account=acct)
    return {
        "plan": acct.plan.slug,
        "plan_type": acct.plan.plan_type,
        "balance_micros": str(acct.balance_micros),
        "held_micros": str(acct.held_micros),
        "available_micros": str(acct.available_micros),
        "available": format_usd(acct.available_micros, round_down=True),
        "suspended": acct.suspended,
        "allowance": (
            None
            if allowance is None
            else {
                "limit": allowance.limit,
                "used": allowance.used,
                "remaining": allowance.remaining,
            }
        ),
        "promotional_micros": str(split.promotional_micros),
        "purchased_micros": str(split.purchased_micros),
        "promotions": [
            {"remaining_micros": str(lot.remaining_micros), "expires_at": lot.expires_at}
            for lot in split.lots
        ],
        "low_balance": (
            None
            if low is None
            else {
                "threshold_micros": str(low.threshold_micros),
                "available_micros": str(low.available_micros),
            }
        ),
    }


def _entry_out(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "created_at": entry.created_at,
        "kind": entry.kind,
        "effect": entry.effect,
        "amount_micros": str(entry.amount_micros),
        "balance_after_micros": str(entry.balance_after_micros),
        "held_after_micros": str(entry.held_after_micros),
        "generation_id": entry.generation_id,
        "reason": entry.reason,
    }


@router.get("/ledger", response=LedgerPageOut, summary="Your ledger entries, newest first")
def ledger(request: HttpRequest, before_id: int | None = None) -> dict[str, Any]:
    acct = account_open(user_id=_user(request).pk)
    entries = account_entries(account=acct)
    if before_id is not None:
        entries = entries.filter(pk__lt=before_id)
    page = list(entries[: LEDGER_PAGE_SIZE + 1])
    more = len(page) > LEDGER_PAGE_SIZE
    page = page[:LEDGER_PAGE_SIZE]
    return {
        "items": [_entry_out(entry) for entry in page],
        "next_before_id": page[-1].pk if more else None,
    }
