"""Typed results of the pymthouse client (house style R10: parse at the boundary).

Builder/usage JSON is camelCase and pymthouse says to treat unknown keys as additive, so
the models ignore extra keys but require the keys we rely on. OAuth bodies are
snake_case. Money is ``int`` (USD micros, wei), exact decimals are ``Decimal``, the one
fractional amount (``networkFeeUsdExact``, USD micros) is a ``Fraction`` of micros; see
``money.py`` for the grammar. Tokens are wrapped in ``SecretToken`` and live only in
frozen dataclasses whose token fields are excluded from ``repr``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Final, Literal, NoReturn, final

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool
from pydantic.alias_generators import to_camel

from integrations.pymthouse.money import (
    parse_count,
    parse_decimal,
    parse_exact_usd_micros,
    parse_signed_usd_micros,
    parse_usd_micros,
    parse_wei,
)

UsdMicros = Annotated[int, PlainValidator(parse_usd_micros)]
SignedUsdMicros = Annotated[int, PlainValidator(parse_signed_usd_micros)]
Wei = Annotated[int, PlainValidator(parse_wei)]
Count = Annotated[int, PlainValidator(parse_count)]
ExactDecimal = Annotated[Decimal, PlainValidator(parse_decimal)]
ExactUsdMicros = Annotated[Fraction, PlainValidator(parse_exact_usd_micros)]

GroupBy = Literal["none", "user", "pipeline_model", "manifest"]
UserStatus = Literal["active", "inactive"]

_VISIBLE_SUFFIX: Final = 4
_MIN_LENGTH_TO_SHOW_SUFFIX: Final = 16


@final
class SecretToken:
    """A bearer token or secret that does not print itself.

    ``str()``/``repr()``/f-strings show at most the last 4 characters; the raw value is
    only available through :meth:`reveal`, so every place that sends it is greppable.
    Not a ``str`` subclass (a ``str`` subclass leaks through ``"".join``, JSON dumps,
    ``%s`` in C code, ...), not picklable (keeps it out of Celery payloads and caches by
    accident).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a token must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The raw value. Call only where it is sent over the wire or stored on purpose."""
        return self._value

    def masked(self) -> str:
        if len(self._value) < _MIN_LENGTH_TO_SHOW_SUFFIX:
            return "****"
        return "****" + self._value[-_VISIBLE_SUFFIX:]

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"SecretToken({self.masked()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretToken):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((SecretToken, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretToken is not serialisable; store token.reveal() deliberately")


class _CamelModel(BaseModel):
    """Builder/usage JSON: camelCase, unknown keys ignored, input never echoed in errors."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        hide_input_in_errors=True,
    )


class _SnakeModel(BaseModel):
    """OAuth/OIDC JSON: snake_case, unknown keys ignored, input never echoed in errors."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)


# --- users ------------------------------------------------------------------------------


class PymthouseUser(_CamelModel):
    """One ``app_users`` row. ``external_user_id`` is the join key with our users."""

    id: str = Field(min_length=1)
    client_id: str
    external_user_id: str = Field(min_length=1)
    status: str
    email: str | None = None
    role: str | None = None
    deposit_wallet_address: str | None = None
    auto_top_up_enabled: StrictBool | None = None
    auto_top_up_usd_micros: UsdMicros | None = None
    created_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class UserUpsert:
    """Result of ``POST /users``: ``created`` is True for 201, False for 200."""

    user: PymthouseUser
    created: bool


# --- tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserToken:
    """Programmatic user JWT from ``POST /users/{ext}/token`` (900 s, ``sign:job``).

    ``refresh_token`` is returned but unusable with an m2m app shape
    (docs/upstream.md §P3.4): re-mint instead of refreshing.
    """

    access_token: SecretToken = field(repr=False)
    refresh_token: SecretToken | None = field(repr=False)
    token_type: str
    expires_in: int
    expires_at: datetime
    scope: str
    subject_type: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class SignerSession:
    """A 300 s signer JWT for one end user plus where to spend it.

    ``balance_usd_micros`` is the spendable amount at mint time (may be 0 when hosted
    billing is off); ``lifetime_granted_usd_micros`` is ``None`` when not sent.
    """

    access_token: SecretToken = field(repr=False)
    token_type: str
    expires_in: int
    expires_at: datetime
    scope: str
    signer_url: str
    discovery_url: str
    balance_usd_micros: int
    lifetime_granted_usd_micros: int | None
    issued_token_type: str | None
    correlation_id: str | None


class UserTokenResponse(_SnakeModel):
    access_token: str = Field(min_length=1)
    refresh_token: str | None = None
    token_type: str
    expires_in: Count
    scope: str
    subject_type: str | None = None
    correlation_id: str | None = None


class SignerSessionResponse(_SnakeModel):
    access_token: str = Field(min_length=1)
    token_type: str
    expires_in: Count
    scope: str
    signer_url: str = Field(min_length=1)
    discovery_url: str = Field(min_length=1)
    balance_usd_micros: SignedUsdMicros = Field(alias="balanceUsdMicros")
    lifetime_granted_usd_micros: UsdMicros | None = Field(
        default=None, alias="lifetimeGrantedUsdMicros"
    )
    issued_token_type: str | None = None
    correlation_id: str | None = None


# --- usage ------------------------------------------------------------------------------


class UsagePeriod(_CamelModel):
    start: str | None = None
    end: str | None = None


class UsageTotals(_CamelModel):
    """Totals for the period. ``request_count`` counts signed payment tickets."""

    request_count: Count
    currency: str
    network_fee_usd_micros: UsdMicros
    owner_charge_usd_micros: UsdMicros | None = None
    platform_fee_usd_micros: UsdMicros | None = None
    end_user_billable_usd_micros: UsdMicros | None = None


class UsageByUser(_CamelModel):
    """``byUser[]`` row. ``end_user_id`` equals ``external_user_id`` (the meter key)."""

    end_user_id: str
    external_user_id: str
    currency: str
    request_count: Count
    network_fee_usd_micros: UsdMicros
    owner_charge_usd_micros: UsdMicros | None = None
    user_type: str | None = None
    identifier: str | None = None
    end_user_billable_usd_micros: UsdMicros | None = None


class UsageByPipelineModel(_CamelModel):
    pipeline: str
    model_id: str | None
    currency: str
    request_count: Count
    network_fee_usd_micros: UsdMicros
    owner_charge_usd_micros: UsdMicros | None = None
    end_user_billable_usd_micros: UsdMicros | None = None


class UsageByManifest(_CamelModel):
    """``byManifest[]`` row: the only usage rows carrying wei (``fee_wei``).

    ``network_fee_usd_exact_micros`` is ``networkFeeUsdExact``: the manifest's summed
    fee in USD **micros** with a fraction (``"29999996.338176"`` is about $30, not
    $29.99), as a ``Fraction`` of micros. pymthouse sets ``networkFeeUsdMicros`` to its
    ceiling (``ceilExactUsdMicrosSum``, ``src/lib/openmeter/usage-read.ts``), computed
    from the same JS double, so the two are not cross-checked here: the integer is what
    the mirror accounts with, the exact figure is for audit and display.
    """

    manifest_id: str
    currency: str
    network_fee_usd_micros: UsdMicros
    fee_wei: Wei
    network_fee_usd_exact_micros: ExactUsdMicros | None = Field(
        default=None, alias="networkFeeUsdExact"
    )
    owner_charge_usd_micros: UsdMicros | None = None
    billable_secs: ExactDecimal | None = None
    pipeline: str | None = None
    model_id: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One ``byManifest[]`` row parsed for bulk use (``PymthouseClient.usage_manifests``):
    the same fields and grammar as ``UsageByManifest``, without a model object per row."""

    manifest_id: str
    network_fee_usd_micros: int
    fee_wei: int
    network_fee_usd_exact_micros: Fraction | None
    pipeline: str | None
    model_id: str | None


class UsageReport(_CamelModel):
    """``GET /builder/apps/{app}/usage``.

    Amounts are USD micros (1 USD = 1,000,000). Every ``request_count`` is the
    ``signed_ticket_count`` meter: it counts signed payment tickets, **not** inference
    calls (one image may take several tickets). Data lags inference by seconds to
    minutes (Kafka -> OpenMeter). Rows are present only for the matching ``group_by``.
    """

    client_id: str
    source: str | None = None
    period: UsagePeriod
    totals: UsageTotals
    by_user: tuple[UsageByUser, ...] = ()
    by_pipeline_model: tuple[UsageByPipelineModel, ...] = ()
    by_manifest: tuple[UsageByManifest, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageByUserTotals:
    """``groupBy=user`` parsed for bulk use (``PymthouseClient.usage_by_user``).

    ``by_user`` maps ``externalUserId`` to ``(requestCount, networkFeeUsdMicros)``;
    ``requestCount`` counts signed tickets, not inference calls.
    """

    totals: UsageTotals
    by_user: dict[str, tuple[int, int]]


class UsageBalance(_CamelModel):
    """``GET /builder/apps/{app}/usage/balance``.

    All amounts are signed: balances go negative in overage, and the grant/consumed pair
    is derived from OpenMeter entitlements that we do not want to second-guess here.
    """

    external_user_id: str
    balance_usd_micros: SignedUsdMicros
    has_access: StrictBool
    remaining_usd_micros: SignedUsdMicros | None = None
    lifetime_granted_usd_micros: SignedUsdMicros | None = None
    consumed_usd_micros: SignedUsdMicros | None = None


# --- discovery ---------------------------------------------------------------------------


class ProviderMetadata(_SnakeModel):
    """The parts of the OIDC discovery document we use; the rest is ignored."""

    issuer: str = Field(min_length=1)
    token_endpoint: str = Field(min_length=1)
    jwks_uri: str = Field(min_length=1)
    authorization_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    scopes_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()

    def as_cache_value(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
