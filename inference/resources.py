"""The generation resource: what the JSON API answers and what a completion webhook carries.

One builder for both (``generation_json``), so a webhook's ``data`` is exactly what
``GET /api/v1/generations/{id}`` answers at that moment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.urls import reverse
from ninja import Field, Schema

from billing.money import format_usd
from billing.selectors import GenerationMoney, generations_money
from inference import events, selectors, services
from inference.models import Generation, GenerationStatus


class ErrorOut(Schema):
    code: str
    message: str


class CostOut(Schema):
    usd_micros: str | None = Field(description="Integer USD micros as a string (1 USD = 1,000,000)")
    wei: str | None = Field(description="Exact network fee in wei as a decimal string")


class PaymentOut(Schema):
    """What the payment bought, recorded at payment time (null fields until then)."""

    manifest_id: str | None = Field(
        description="The runner challenge's session id: usage joins on it"
    )
    price_wei: str | None = Field(description="The runner's price per unit, exact, in wei")
    price_unit: str | None = Field(description="fixed or seconds")
    units_paid: int | None
    expected_fee_wei: str | None = Field(description="What the payment costs, exact, in wei")


class MoneyOut(Schema):
    """What the image costs you, exact USD micros (digit strings) beside dollars text."""

    quoted_micros: str | None = Field(
        description="The most this image may cost, quoted and held when it was submitted "
        "(null on a plan that holds nothing: an allowance or a subscription)"
    )
    quoted: str | None = Field(description="The same in dollars, e.g. '$0.02'")
    held_micros: str | None = Field(
        description="Held from your balance now: the quote while the image runs, 0 once "
        "it was charged or released"
    )
    held: str | None
    hold_status: str | None = Field(description="open, settled (charged) or released")
    charged_micros: str | None = Field(
        description="What you were charged, known at payment time (never more than quoted)"
    )
    charged: str | None
    refunded_micros: str | None = Field(
        description="Given back because the network did not deliver the image"
    )
    refunded: str | None


class NetworkOut(Schema):
    """What the Livepeer network was paid for the image, exact wei (digit strings)."""

    fee_wei: str | None = Field(description="The network fee the charge was computed from")
    max_fee_wei: str | None = Field(description="The most the payment was allowed to cost")
    eth_usd_rate: str | None = Field(description="USD per ETH the fee was converted at")


class StepOut(Schema):
    stage: str = Field(description="A GenerationStage value")
    label: str
    state: str = Field(description="done, current, todo, failed or skipped")
    at: datetime | None = Field(description="When the server recorded reaching it, if it does")


class GenerationOut(Schema):
    id: UUID
    status: str
    stage: str = Field(description="A GenerationStage value (see stage_label)")
    state: str = Field(
        description="'<status>/<stage>': pass it as `since` to /next; the id of each event"
    )
    stage_label: str
    progress: int = Field(description="0-100, coarse progress derived from the stage")
    prompt: str
    negative_prompt: str
    model_id: str
    width: int
    height: int
    seed: int | None
    image_seed: int | None
    error: ErrorOut | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float = Field(
        description="Seconds since it was submitted, at the time of this response (until it "
        "finished, once it has): a client ticks on from it, whatever its clock"
    )
    queue_position: int | None = Field(
        description="While queued: 1 = the next to start (everyone's queue); else null"
    )
    steps: list[StepOut] = Field(description="The stages as steps, in order")
    can_cancel: bool = Field(description="POST …/cancel would cancel it now")
    cancel_refusal: str = Field(description="Why it cannot be canceled any more ('' if it can)")
    can_retry: bool = Field(description="POST …/retry makes a new one (failed or canceled)")
    image_url: str | None
    detail_url: str
    payment: PaymentOut
    money: MoneyOut
    network: NetworkOut
    cost: CostOut = Field(
        description="What the image cost: the metered figures once the usage mirror has "
        "them, until then the charge made at payment time (null before any charge)"
    )


def _digits(value: int | None) -> str | None:
    return None if value is None else str(value)


def _usd(value: int | None) -> str | None:
    return None if value is None else format_usd(value)


def generation_out(generation: Generation, money: GenerationMoney | None = None) -> dict[str, Any]:
    """The resource of ``generation``; ``money`` from ``generations_money`` (read if None)."""
    if money is None:
        # Before a payment claim nothing can have been charged or refunded: the ledger
        # is not read (a queued or just-submitted generation, the stream's first read).
        never_paid = (
            frozenset({generation.pk})
            if generation.payment_claimed_at is None and not generation.tickets_paid
            else frozenset()
        )
        money = generations_money(generation_ids=[generation.pk], never_paid=never_paid)[
            generation.pk
        ]
    cost_micros = (
        generation.cost_usd_micros
        if generation.cost_usd_micros is not None
        else money.charged_micros
    )
    cost_wei = generation.cost_wei if generation.cost_wei is not None else money.charged_fee_wei
    held = None if money.hold_status is None else 0
    if money.hold_status == "open":
        held = money.held_micros
    succeeded = generation.status == GenerationStatus.SUCCEEDED and bool(generation.image)
    paid = generation.payment_claimed_at is not None
    return {
        "id": generation.pk,
        "status": generation.status,
        "stage": generation.stage,
        "stage_label": generation.stage_label,
        "progress": generation.progress,
        "state": events.state_token(generation.status, generation.stage),
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "model_id": generation.model_id,
        "width": generation.width,
        "height": generation.height,
        "seed": generation.seed,
        "image_seed": generation.image_seed,
        "error": (
            {"code": generation.error_code, "message": generation.error_message}
            if generation.status == GenerationStatus.FAILED
            else None
        ),
        "created_at": generation.created_at,
        "started_at": generation.started_at,
        "finished_at": generation.finished_at,
        "elapsed_seconds": round(selectors.generation_elapsed_seconds(generation=generation), 3),
        "queue_position": selectors.generation_queue_position(generation=generation),
        "steps": [
            {"stage": step.stage, "label": step.label, "state": step.state, "at": step.at}
            for step in selectors.generation_steps(generation=generation)
        ],
        "can_cancel": not generation.is_finished and not paid,
        "cancel_refusal": (
            services.ALREADY_PAID_MESSAGE if paid and not generation.is_finished else ""
        ),
        "can_retry": generation.status in services.RETRYABLE_STATUSES,
        "image_url": (
            reverse("inference:image", kwargs={"generation_id": generation.pk})
            if succeeded
            else None
        ),
        "detail_url": reverse("inference:detail", kwargs={"generation_id": generation.pk}),
        "payment": {
            "manifest_id": generation.manifest_id or None,
            "price_wei": _digits(generation.price_wei),
            "price_unit": generation.price_unit or None,
            "units_paid": generation.units_paid,
            "expected_fee_wei": _digits(generation.expected_fee_wei),
        },
        "money": {
            "quoted_micros": _digits(money.held_micros),
            "quoted": _usd(money.held_micros),
            "held_micros": _digits(held),
            "held": _usd(held),
            "hold_status": money.hold_status,
            "charged_micros": _digits(money.charged_micros),
            "charged": _usd(money.charged_micros),
            "refunded_micros": _digits(money.refunded_micros),
            "refunded": _usd(money.refunded_micros),
        },
        "network": {
            "fee_wei": _digits(money.charged_fee_wei),
            "max_fee_wei": _digits(money.max_fee_wei),
            "eth_usd_rate": money.eth_usd_rate or None,
        },
        "cost": {"usd_micros": _digits(cost_micros), "wei": _digits(cost_wei)},
    }


def generation_json(generation: Generation) -> dict[str, Any]:
    """The resource as JSON-ready values (what a response body or a webhook carries)."""
    return GenerationOut.model_validate(generation_out(generation)).model_dump(mode="json")
