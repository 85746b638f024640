"""Low balance: one e-mail per threshold crossing, with decreasing thresholds.

``BILLING_LOW_BALANCE_THRESHOLDS_MICROS`` lists available-balance levels (say $5 and $1).
Like Lago's wallet alerts, each level mails once when the available balance falls from
above it to at or below it; a credit (a top-up, a grant, a refund) that lifts the
available balance back above a level re-arms it. The state is one column of the account
row, ``low_balance_notified_micros`` (the lowest level the user has been told about),
changed by ``ledger_entry_append`` under the account lock in the transaction that moves
the money: two settlements crossing the same level one after the other see the state
the first one wrote, so only one mail leaves. The mail is sent after commit by
``billing.tasks.low_balance_mail_task`` with the crossing entry's id only.

Rules, for a change of the available balance from ``before`` to ``after``:

* down (``after < before``): the levels crossed are ``after ≤ level < before``; if the
  lowest of them is below the state (or nothing was notified), it becomes the state and
  one mail is sent for it. An account that starts below a level (opened with $0, or
  granted less than $5) never crossed it and gets no mail for it.
* up, by a credit only: the state becomes the lowest level still at or above ``after``
  (none: every level is armed again). A hold returned at the end of an image is not a
  top-up and re-arms nothing, so settling an image (release, then debit) never mails a
  level twice.

Only plans that charge per image have a balance to run low (``plan_policy().charges``).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from billing import tasks
from billing.models import Account, EntryEffect, LedgerEntry
from billing.money import format_usd
from billing.plan_policy import plan_policy
from integrations.pymthouse.money import parse_usd_micros

logger = logging.getLogger(__name__)


def low_balance_levels() -> list[int]:
    """The configured thresholds in USD micros, highest first."""
    levels = {parse_usd_micros(text) for text in settings.BILLING_LOW_BALANCE_THRESHOLDS_MICROS}
    return sorted(levels, reverse=True)


def low_balance_level(*, available_micros: int) -> int | None:
    """The lowest threshold ``available_micros`` is at or below, if any."""
    crossed = [level for level in low_balance_levels() if available_micros <= level]
    return min(crossed) if crossed else None


def low_balance_track(
    *,
    account: Account,
    available_before: int,
    available_after: int,
    effect: str,
    entry_id: int,
) -> bool:
    """Update the **locked** account's low-balance state for one entry (not saved here:
    the caller saves the row with its totals); returns whether it changed. A downward
    crossing schedules the mail for after commit."""
    if not plan_policy(account.plan).charges or available_after == available_before:
        return False
    notified = account.low_balance_notified_micros
    if available_after < available_before:
        crossed = [
            level for level in low_balance_levels() if available_after <= level < available_before
        ]
        if not crossed or (notified is not None and min(crossed) >= notified):
            return False
        account.low_balance_notified_micros = min(crossed)
        account.low_balance_notified_at = timezone.now()
        transaction.on_commit(lambda: tasks.low_balance_mail_task.delay(entry_id))
        return True
    if effect != EntryEffect.CREDIT or notified is None or available_after <= notified:
        return False
    level = low_balance_level(available_micros=available_after)
    account.low_balance_notified_micros = level
    if level is None:
        account.low_balance_notified_at = None
    return True


def low_balance_mail_send(*, entry_id: int) -> bool:
    """Mail the owner of ``entry_id`` that their available balance crossed a threshold
    (the lowest one crossed by that entry); False when there is nothing to say (the entry
    is gone from view, the user has no address)."""
    entry = LedgerEntry.objects.select_related("account__user").filter(pk=entry_id).first()
    if entry is None or not entry.account.user.email:
        return False
    available = entry.balance_after_micros - entry.held_after_micros
    level = low_balance_level(available_micros=available)
    if level is None:
        return False
    context = {
        "user": entry.account.user,
        "available": format_usd(available, round_down=True),
        "threshold": format_usd(level),
        "empty": available == 0,
        "credit_path": reverse("billing:credit_add"),
        "billing_path": reverse("billing:dashboard"),
    }
    subject = render_to_string("billing/email/low_balance_subject.txt", context).strip()
    body = render_to_string("billing/email/low_balance_body.txt", context)
    send_mail(subject, body, None, [entry.account.user.email])
    logger.info("billing: low-balance mail for entry %s (level %s µUSD)", entry_id, level)
    return True
