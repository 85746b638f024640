"""The ETH/USD rate network fees (wei) are converted at into what users pay (USD micros).

pymthouse meters each payment in wei and in exact USD micros (a mirrored manifest's
``feeWei`` and ``networkFeeUsdExact``, ``pymthouse/pymthouse:src/lib/openmeter/usage-read.ts``).
The usage mirror hands each such pair to ``rate_observe_metered``; while the newest is
younger than ``BILLING_METERED_RATE_MAX_AGE_SECONDS`` it is the rate, else the configured
``BILLING_ETH_USD_RATE``. A rate is kept as exact decimal text (USD per ETH, at most 12
decimals, rounded half to even when derived), and the text recorded on a charge is the
very value it was converted at: ``Fraction(text)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

from django.conf import settings
from django.utils import timezone

from billing.models import MeteredRate, RateSource
from billing.money import parse_eth_usd_rate

RATE_PLACES = 12


@dataclass(frozen=True)
class Rate:
    """USD per ETH, where it came from, and when (``None``: the configured setting)."""

    usd_per_eth: Fraction
    text: str
    source: str
    at: datetime | None


def rate_text(value: Fraction) -> str:
    """``value`` as decimal text with at most ``RATE_PLACES`` decimals (half to even)."""
    with localcontext() as context:
        context.prec = 120
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        rounded = exact.quantize(Decimal(1).scaleb(-RATE_PLACES), rounding=ROUND_HALF_EVEN)
    text = format(rounded, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def configured_rate() -> Rate:
    text = str(settings.BILLING_ETH_USD_RATE).strip()
    return Rate(
        usd_per_eth=parse_eth_usd_rate(text), text=text, source=RateSource.CONFIGURED, at=None
    )


def rate_now(*, now: datetime | None = None) -> Rate:
    """The rate to convert a fee at now: the newest fresh metered one, else configured."""
    now = now or timezone.now()
    fresh_after = now - timedelta(seconds=settings.BILLING_METERED_RATE_MAX_AGE_SECONDS)
    newest = (
        MeteredRate.objects.filter(observed_at__gte=fresh_after)
        .order_by("-observed_at", "-id")
        .first()
    )
    if newest is None:
        return configured_rate()
    return Rate(
        usd_per_eth=Fraction(newest.eth_usd_rate),
        text=newest.eth_usd_rate,
        source=RateSource.METERED,
        at=newest.observed_at,
    )


def rate_from_metering(*, fee_wei: int, usd_micros_exact: Fraction) -> Fraction | None:
    """USD per ETH implied by one metered payment, or ``None`` when it implies nothing."""
    if fee_wei <= 0 or usd_micros_exact <= 0:
        return None
    return usd_micros_exact * 10**18 / (fee_wei * 10**6)


def rate_observe_metered(
    *, fee_wei: int, usd_micros_exact: Fraction, usage_ref: str, observed_at: datetime
) -> Rate | None:
    """Record the rate one metered payment implies (the mirror calls it per new manifest)."""
    implied = rate_from_metering(fee_wei=fee_wei, usd_micros_exact=usd_micros_exact)
    if implied is None:
        return None
    text = rate_text(implied)
    if Fraction(text) <= 0:
        return None
    MeteredRate.objects.create(
        eth_usd_rate=text, usage_ref=usage_ref[:200], observed_at=observed_at
    )
    return Rate(usd_per_eth=Fraction(text), text=text, source=RateSource.METERED, at=observed_at)
