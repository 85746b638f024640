"""Typed results of pymthouse's end-user billing routes (house style R10).

Shapes are pymthouse/pymthouse@5ee7cfc7's (docs/upstream.md §P9):
``BillingState`` from ``src/lib/billing/billing-state.ts``, the wallet from
``src/app/api/v1/apps/[id]/billing/wallet/route.ts``, plans from
``src/lib/billing/product-dto.ts``, the user subscription from
``src/app/api/v1/apps/[id]/users/[externalUserId]/subscription/route.ts``, invoices from
``src/lib/stripe/merchant-connect.ts`` / ``src/lib/openmeter/invoices.ts`` and payment
methods from ``src/lib/openmeter/owner-payment-method.ts``.

Money is ``int`` USD micros everywhere: ``usdMicros`` integer strings exactly, decimal
dollar strings (``priceAmount``, ``amountUsd``, ``totalAmount``) through
``money.parse_usd_dollars``. The display strings (``usd: "2.00"``) are not kept: the
product formats its own. Unknown keys are ignored (pymthouse treats them as additive).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PlainValidator, StrictBool, StrictInt

from integrations.pymthouse.money import parse_decimal, parse_usd_dollars
from integrations.pymthouse.types import SignedUsdMicros, UsdMicros, _CamelModel

UsdDollars = Annotated[int, PlainValidator(parse_usd_dollars)]
ExactDecimal = Annotated[Decimal, PlainValidator(parse_decimal)]

BillingMode = Literal["owner_rollup", "merchant"]
PostureStatus = Literal["active", "overage", "at_risk", "blocked"]
PostureReason = Literal[
    "no_payment_method", "overage_not_available", "debt_ceiling_reached", "billing_unavailable"
]
ChangeTiming = Literal["immediate", "next_billing_cycle"]


# --- billing state (src/lib/billing/billing-state.ts) -----------------------------------


class Money(_CamelModel):
    """``{usdMicros, usd, currency}``; only the exact micros are kept."""

    usd_micros: UsdMicros
    currency: str


class SignedMoney(_CamelModel):
    usd_micros: SignedUsdMicros
    currency: str


class PlanRef(_CamelModel):
    id: str
    name: str
    type: str


class IncludedUsage(_CamelModel):
    total: Money
    remaining: Money
    consumed: Money
    resets_at: datetime
    source_plan: PlanRef | None = None


class Overage(_CamelModel):
    eligible: StrictBool
    ceiling: Money
    unbilled_debt: Money | None = None
    remaining: Money | None = None
    utilization_bps: StrictInt | None = None
    debt_source: str


class Funding(_CamelModel):
    prepaid: Money
    included: Money
    included_usage: IncludedUsage
    spendable: Money
    net: SignedMoney | None = None
    overage: Overage


class PaymentMethodSummary(_CamelModel):
    has_default: StrictBool | None = None
    brand: str | None = None
    last4: str | None = None


class Collection(_CamelModel):
    mode: str
    collector: str
    payment_method: PaymentMethodSummary
    next_action: str
    lead_threshold: Money
    minimum_charge: Money


class BillingSubject(_CamelModel):
    type: Literal["owner", "end_user"]
    external_user_id: str | None = None
    billing_mode: BillingMode


class Explain(_CamelModel):
    headline: str
    detail: str
    docs_url: str | None = None


class BillingState(_CamelModel):
    """Who pays and whether they may spend now (``resolvePosture``)."""

    as_of: datetime
    subject: BillingSubject
    status: PostureStatus
    can_spend: StrictBool
    reason: PostureReason | None = None
    funding: Funding
    collection: Collection
    explain: Explain

    @property
    def spendable_usd_micros(self) -> int:
        return self.funding.spendable.usd_micros

    @property
    def prepaid_usd_micros(self) -> int:
        return self.funding.prepaid.usd_micros


# --- wallet (src/app/api/v1/apps/[id]/billing/wallet/route.ts) ----------------------------


class WalletBalance(_CamelModel):
    """Prepaid credit of the payer (the end user in merchant mode, else the owner)."""

    usd_micros: SignedUsdMicros
    lifetime_granted_usd_micros: UsdMicros | None = None
    consumed_usd_micros: UsdMicros | None = None


class AutoTopUp(_CamelModel):
    enabled: StrictBool
    amount_usd_micros: UsdDollars | None = Field(default=None, alias="amountUsd")


class PayPerUsePlan(_CamelModel):
    plan_id: str
    plan_name: str
    charge_threshold_usd_micros: UsdMicros | None = None
    resolved_behavior: str | None = None


class Wallet(_CamelModel):
    """``GET …/billing/wallet``. ``balance`` is ``None`` without hosted billing (T#13)."""

    client_id: str
    balance: WalletBalance | None = None
    payment_method: PaymentMethodSummary
    auto_top_up: AutoTopUp | None = None
    billing_state: BillingState
    pay_per_use_plans: tuple[PayPerUsePlan, ...] = ()


class AutoTopUpResult(_CamelModel):
    """``PATCH …/billing/wallet``."""

    external_user_id: str
    auto_top_up: AutoTopUp


class TopUpCheckout(_CamelModel):
    """``POST …/billing/wallet/top-up``: send the user to ``checkout_url``, then poll."""

    checkout_url: str = Field(min_length=1)
    session_id: str | None = None
    amount_usd_micros: UsdMicros


class PaymentMethodSetup(_CamelModel):
    """``POST …/billing/wallet/payment-methods``: a setup-mode Checkout (no charge)."""

    checkout_url: str = Field(min_length=1)
    session_id: str | None = None
    has_default_payment_method: StrictBool | None = None


# --- plans (src/lib/billing/product-dto.ts, v1) -------------------------------------------


class Plan(_CamelModel):
    """``PlanV1``. ``price_usd_micros`` is ``priceAmount`` (decimal dollars) exactly."""

    id: str
    client_id: str
    name: str
    type: str
    price_usd_micros: UsdDollars = Field(alias="priceAmount")
    price_currency: str
    status: str
    billing_cycle: str | None = None
    included_usd_micros: UsdMicros | None = None
    overage_rate_usd: ExactDecimal | None = None
    charge_threshold_usd_micros: UsdMicros | None = None
    is_network_default: StrictBool = False
    is_starter_default: StrictBool = False
    replacement_plan_id: str | None = None

    @property
    def purchasable(self) -> bool:
        """An active plan a user can choose (not the discovery-only network default)."""
        return self.status == "active" and not self.is_network_default


class PlansPage(_CamelModel):
    api_version: StrictInt
    plans: tuple[Plan, ...]


class PlanCheckout(_CamelModel):
    """``POST …/billing/checkout``. No ``subscription_id``: a setup-mode URL (no card
    saved, nothing subscribed yet); with one, the plan is already active and
    ``checkout_url`` is the success URL itself."""

    checkout_url: str = Field(min_length=1)
    subscription_id: str | None = None

    @property
    def needs_card(self) -> bool:
        return self.subscription_id is None


# --- subscription ------------------------------------------------------------------------


class PlanSurface(_CamelModel):
    id: str | None = None
    name: str | None = None
    type: str | None = None
    effective_at: datetime | None = None


class PendingCancel(_CamelModel):
    subscription_id: str | None = None
    plan_id: str | None = None
    plan_key: str | None = None
    plan_name: str | None = None
    effective_at: datetime | None = None


class SubscriptionDetail(_CamelModel):
    id: str
    status: str
    plan_id: str | None = None
    plan_name: str | None = None
    plan_type: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None


class UserSubscription(_CamelModel):
    """``GET …/users/{ext}/subscription``; every part is ``None`` with no subscription."""

    external_user_id: str
    subscription: SubscriptionDetail | None = None
    pending_cancel: PendingCancel | None = None
    live_plan: PlanSurface | None = None
    pending_plan: PlanSurface | None = None
    action_required: str | None = None


class PendingPlan(_CamelModel):
    plan_id: str
    effective_at: datetime | None = None


class SubscriptionChange(_CamelModel):
    """``POST …/users/{ext}/subscription/change``. With ``checkout_url`` the user must
    save a card first and ``plan_id`` is still the current plan."""

    subscription_id: str | None = None
    plan_id: str | None = None
    effective_at: datetime | None = None
    timing: ChangeTiming
    checkout_url: str | None = None
    pending_plan: PendingPlan | None = None


class SubscriptionCancel(_CamelModel):
    subscription_id: str | None = None
    plan_id: str | None = None
    plan_key: str | None = None
    scheduled_plan_key: str | None = None
    effective_at: datetime | None = None
    already_starter: StrictBool | None = None
    already_scheduled: StrictBool | None = None


class SubscriptionResume(_CamelModel):
    resumed: StrictBool
    subscription_id: str | None = None
    plan_id: str | None = None
    plan_key: str | None = None


# --- invoices and payment methods ---------------------------------------------------------


class Invoice(_CamelModel):
    """``MerchantBillingHistoryItem`` / ``TenantInvoiceDto``; ``totalAmount`` in dollars."""

    id: str
    number: str | None = None
    status: str
    currency: str
    total_usd_micros: UsdDollars = Field(alias="totalAmount")
    issued_at: datetime | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    invoice_type: str | None = None
    payment_failure_message: str | None = None


class InvoicePage(_CamelModel):
    items: tuple[Invoice, ...]
    page: StrictInt
    page_size: StrictInt
    total_count: StrictInt


class InvoiceLinks(_CamelModel):
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None


class PaymentMethod(_CamelModel):
    id: str
    type: str
    brand: str | None = None
    last4: str | None = None
    exp_month: StrictInt | None = None
    exp_year: StrictInt | None = None
    is_default: StrictBool


class PaymentMethodList(_CamelModel):
    payment_methods: tuple[PaymentMethod, ...]
