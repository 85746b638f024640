"""Runner price units, the signer payment type they need, and what a payment costs.

go-livepeer (``176aa415``) knows three live-runner price units (``server/remote_discovery.go``
rejects any other); the remote signer computes the fee of a payment from the payment
``type`` (``server/remote_signer.go``, ``GenerateLivePayment``):

========================  ==========  ==========================================
runner ``price_info.unit``  ``type``    units billed by the first (stateless) payment
========================  ==========  ==========================================
``fixed``                 ``fixed``   1 per call
``seconds``               ``live``    10 (``billableSecs`` defaults to 10 s)
``720p-pixel-seconds``    ``lv2v``    60 s of 1280×720 at 30 fps (live video)
========================  ==========  ==========================================

``fee = units × price`` (the runner's price has ``pixelsPerUnit`` 1). We never send
``type:""`` (billed on ``inPixels``): with a ``maxPrice`` the signer answers 400.
``720p-pixel-seconds`` is a live-video unit: its first payment buys a minute of
720p video, out of all proportion to one image, so image runners priced that way are
refused with a clear reason rather than paid. See docs/upstream.md §L6.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

UNIT_FIXED = "fixed"
UNIT_SECONDS = "seconds"
UNIT_LV2V = "720p-pixel-seconds"

#: Seconds a first ``live`` payment covers (remote_signer.go: ``billableSecs = 10 s``
#: when the request carries no state; we never send state).
LIVE_FIRST_PAYMENT_SECONDS = 10


@dataclass(frozen=True)
class Pricing:
    """How one runner is paid: the signer ``type`` and the units one payment buys."""

    unit: str
    payment_type: str
    units_per_payment: int


PRICINGS: dict[str, Pricing] = {
    UNIT_FIXED: Pricing(unit=UNIT_FIXED, payment_type="fixed", units_per_payment=1),
    UNIT_SECONDS: Pricing(
        unit=UNIT_SECONDS, payment_type="live", units_per_payment=LIVE_FIRST_PAYMENT_SECONDS
    ),
}

REFUSED_UNITS: dict[str, str] = {
    UNIT_LV2V: (
        "is priced in 720p-pixel-seconds (live video): a payment buys a minute of 720p"
        " video, which image generation does not pay for"
    ),
}


def pricing_for_unit(unit: str) -> Pricing | str:
    """The :class:`Pricing` for a runner's unit, or the reason it is refused."""
    normalized = unit.strip().lower()
    pricing = PRICINGS.get(normalized)
    if pricing is not None:
        return pricing
    return REFUSED_UNITS.get(normalized, f"has an unknown price unit {unit[:40]!r}")


def max_price(
    price_wei: int, unit: str, markup: Decimal, *, cap_per_unit: int | None = None
) -> dict[str, str]:
    """``maxPrice`` for the signer: the advertised price × markup, rounded up.

    With ``cap_per_unit`` the price is ``min(ceil(price × markup), cap_per_unit)``: the
    signer compares the orchestrator's price per unit against it (remote_signer.go
    ``checkRemotePaymentPrice``: refused, 481, when strictly above), so a cap derived
    from a per-image fee ceiling is never exceeded by what the signer will pay.

    ``unit`` must equal the runner's unit (remote_signer.go ``parseRemotePaymentMaxPrice``
    answers 400 otherwise); the price is an exact decimal integer string of any size.
    """
    with localcontext() as context:
        context.prec = 200  # exact for any wei amount up to 2**256 and any sane markup
        ceiling = int((Decimal(price_wei) * markup).to_integral_value(rounding=ROUND_CEILING))
    if cap_per_unit is not None:
        ceiling = min(ceiling, cap_per_unit)
    return {"price": str(ceiling), "currency": "wei", "unit": unit}


def max_price_per_unit(max_fee_wei: int, pricing: Pricing) -> int:
    """The highest per-unit price whose payment stays within ``max_fee_wei`` (floored).

    ``units_per_payment × max_price_per_unit(…) <= max_fee_wei``, exactly.
    """
    return max_fee_wei // pricing.units_per_payment


def within_ceiling(price_wei: int, pricing: Pricing, max_fee_wei: int | None) -> bool:
    """True when one payment to this runner costs at most ``max_fee_wei`` (or no ceiling)."""
    return max_fee_wei is None or expected_fee_wei(price_wei, pricing) <= max_fee_wei


def expected_fee_wei(price_wei: int, pricing: Pricing) -> int:
    """What one payment costs, known before it is made (exact integers)."""
    return price_wei * pricing.units_per_payment
