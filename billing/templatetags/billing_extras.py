"""Money filters for templates: exact integers in, text out, never a float."""

from __future__ import annotations

import re
import uuid

from django import template
from django.urls import reverse
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

from billing.models import LedgerEntry
from billing.money import format_eth, format_usd, format_usd_micros
from billing.selectors import generation_charge as select_charge
from billing.selectors import generation_held_micros
from billing.selectors import generation_refund as select_refund

register = template.Library()


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


@register.filter
def eth(value: object) -> str:
    """Exact ETH: 1234500000000000000 → "1.2345 ETH"."""
    amount = _int(value)
    return "" if amount is None else format_eth(amount)


@register.filter
def wei_digits(value: object) -> str:
    """The exact wei as plain digits (for titles, data attributes and copy-paste)."""
    amount = _int(value)
    return "" if amount is None else str(amount)


@register.filter
def usd(value: object) -> str:
    """USD micros as a payer reads them: "$1.23", sub-cent digits only below a cent."""
    amount = _int(value)
    return "" if amount is None else format_usd(amount)


@register.filter
def usd_balance(value: object) -> str:
    """A balance: to the cent, rounded down (never shows more than is there)."""
    amount = _int(value)
    return "" if amount is None else format_usd(amount, round_down=True)


@register.filter
def usd_exact(value: object) -> str:
    """Every micro: "$1.234567" (titles, staff)."""
    amount = _int(value)
    return "" if amount is None else format_usd_micros(amount)


# pymthouse's own plans are named like keys (``__pymthouse_starter__``, docs/upstream.md
# P9.4); a user reads "Starter".
_BUILT_IN_PLAN = re.compile(r"^__pymthouse_([a-z0-9_]+)__$")
_CYCLE_UNITS = {"daily": "day", "weekly": "week", "monthly": "month"}


@register.filter
def plan_label(value: object) -> str:
    """A pymthouse plan's name as users read it: "Starter" for ``__pymthouse_starter__``."""
    name = str(value or "")
    built_in = _BUILT_IN_PLAN.match(name)
    return built_in.group(1).replace("_", " ").capitalize() if built_in else name


@register.filter
def cycle_unit(value: object) -> str:
    """``monthly`` → "month" (for "$9.00 / month")."""
    return _CYCLE_UNITS.get(str(value), str(value))


@register.filter(is_safe=True)
def breakable(value: object) -> SafeString:
    """Long figures with a line-break opportunity (``<wbr>``) after each "," and ".", so
    a narrow column wraps between digit groups, not mid-group (copying is unchanged)."""
    escaped = str(conditional_escape(str(value)))
    return mark_safe(re.sub(r"([,.])", r"\1<wbr>", escaped))  # noqa: S308  (escaped above)


@register.simple_tag
def generation_charge(generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The usage debit of one image (``{% generation_charge generation.id as charge %}``)."""
    return select_charge(generation_id=generation_id)


@register.simple_tag
def generation_held(generation_id: uuid.UUID | str) -> int | None:
    """An image's open hold in USD micros (``{% generation_held generation.id as held %}``):
    paid for at the network but not charged yet, or not paid yet."""
    return generation_held_micros(generation_id=generation_id)


@register.simple_tag
def generation_refund(generation_id: uuid.UUID | str) -> LedgerEntry | None:
    """The refund of one undelivered image (``{% generation_refund generation.id as r %}``)."""
    return select_refund(generation_id=generation_id)


#: Where a refused image leads: the way out of each refusal (by its code).
REFUSAL_ACTIONS: dict[str, tuple[str, str]] = {
    "allowance_used": ("See plans", "billing:plans"),
    "monthly_cap_reached": ("See plans", "billing:plans"),
    "subscription_inactive": ("Renew your subscription", "billing:plans"),
    # Out of credit (both modes), and pymthouse's blocked reasons in merchant mode.
    "insufficient_credit": ("Add credit", "billing:credit_add"),
    "no_payment_method": ("Add credit", "billing:credit_add"),
    "overage_not_available": ("Add credit", "billing:credit_add"),
    "debt_ceiling_reached": ("Add credit", "billing:credit_add"),
}


@register.simple_tag
def refusal_action(code: str) -> dict[str, str] | None:
    """``{"label", "url"}`` of the page that resolves a refusal ``code``, if any."""
    action = REFUSAL_ACTIONS.get(code)
    if action is None:
        return None
    label, url_name = action
    return {"label": label, "url": reverse(url_name)}
