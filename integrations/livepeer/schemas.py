"""Wire models of the signer, runner and gateway bodies (house style R10).

Unknown keys are ignored (upstreams add fields freely), the keys we rely on are
required, prices become ``Decimal`` here and only here, and nothing secret (payments,
segment credentials, signer state) appears in a ``repr`` or a validation error.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool


def _parse_price(value: object) -> Decimal:
    """A non-negative price from a JSON integer or a decimal string (wei are integers)."""
    if isinstance(value, bool):
        raise ValueError("price must be a number or a decimal string")  # noqa: TRY004 -- pydantic wants ValueError
    if isinstance(value, int):
        price = Decimal(value)
    elif isinstance(value, str | float):
        try:
            price = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError("price must be a decimal") from exc
    else:
        raise ValueError("price must be a number or a decimal string")  # noqa: TRY004 -- pydantic wants ValueError
    if not price.is_finite() or price < 0:
        raise ValueError("price must be a finite, non-negative decimal")
    return price


def _parse_optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected an integer")  # noqa: TRY004 -- pydantic wants ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError("expected an integer")


Price = Annotated[Decimal, PlainValidator(_parse_price)]
OptionalInt = Annotated[int | None, PlainValidator(_parse_optional_int)]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)


# --- discovery ----------------------------------------------------------------------


class PriceInfo(_Wire):
    price: Price
    currency: str = "wei"
    unit: str


class RunnerInfo(_Wire):
    url: str = Field(min_length=1)
    app: str = ""
    mode: str | None = None
    price_info: PriceInfo | None = None
    capacity_available: OptionalInt = None


class OrchestratorInfo(_Wire):
    address: str | None = None
    runners: tuple[RunnerInfo, ...] = ()


class Discovery(_Wire):
    """``GET {discovery_url}`` answers a bare JSON list; it is wrapped here."""

    orchestrators: tuple[OrchestratorInfo, ...]


# --- signer -------------------------------------------------------------------------


class SignerInfo(_Wire):
    address: str = Field(min_length=1)
    signature: str = Field(min_length=1, repr=False)


#: Header values we forward must be visible ASCII (base64 in practice), so an odd value
#: can never make ``requests`` quote it in an exception.
HEADER_VALUE = r"^[\x21-\x7e]+$"


class PaymentResponse(_Wire):
    payment: str = Field(min_length=1, pattern=HEADER_VALUE, repr=False)
    seg_creds: str | None = Field(default=None, alias="segCreds", pattern=HEADER_VALUE, repr=False)
    state: dict[str, Any] | None = Field(default=None, repr=False)


# --- runner -------------------------------------------------------------------------


class PaymentChallenge(_Wire):
    """A runner's 402 body."""

    payment_params: str = Field(min_length=1, repr=False)
    manifest_id: str = Field(min_length=1)
    payment_url: str | None = None


class RefreshedParams(_Wire):
    payment_params: str = Field(min_length=1, repr=False)
    manifest_id: str | None = None


class ImageItem(_Wire):
    url: str = Field(min_length=1, repr=False)
    seed: OptionalInt = None
    nsfw: StrictBool = False
    content_type: str | None = None


class ImagesResponse(_Wire):
    """``{"images": [{url, seed, nsfw}, …]}`` from a runner, a queue result or a gateway."""

    images: tuple[ImageItem, ...]
    seed: OptionalInt = None
    has_nsfw_concepts: tuple[StrictBool, ...] | None = None
    request_id: str | None = None


class QueueReceipt(_Wire):
    """A fal-style queue receipt: ``IN_QUEUE`` + where to poll."""

    status: str
    request_id: str | None = None
    status_url: str | None = None
    response_url: str | None = None


class QueueStatus(_Wire):
    status: str
    error: Any = None
    response_url: str | None = None
