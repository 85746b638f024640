"""The app's billing book: mode, Stripe Connect, plans, end-user wallets and Checkouts.

Models pymthouse/pymthouse@5ee7cfc7's merchant billing (docs/upstream.md §P9):
``app_billing_config`` (``billing_mode``, Connect readiness), the per-app plans
(``src/lib/starter-default-plan.ts``), each merchant end user's ``sbx_eu_…`` OpenMeter
customer (prepaid credit grants, the Starter's included usage, the saved card, the
subscription) and the Stripe Checkout sessions the top-up and setup flows create.

Defaults are the real local server: ``owner_rollup`` and billing *off* (no OpenMeter, no
Stripe). "Billing on" needs both this book's ``enabled`` and the runtime
``openMeterEnabled``. Money is exact ``int`` USD micros throughout.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.config import BillingDefaults

PLAN_TYPES = ("free", "subscription", "usage")
NETWORK_DEFAULT_PLAN = "__pymthouse_network_default__"
STARTER_PLAN = "__pymthouse_starter__"
STARTER_INCLUDED_USD_MICROS = 5_000_000
#: ``DEFAULT_SOFT_NEGATIVE_USD_MICROS`` (src/lib/billing/soft-negative-gate.ts).
DEFAULT_CEILING_USD_MICROS = 2_000_000
MINIMUM_CHARGE_USD_MICROS = 500_000
LEAD_CAP_USD_MICROS = 5_000_000
MICROS_PER_CENT = 10_000
DEFAULT_AUTO_TOP_UP_USD_MICROS = 10_000_000
PAY_AS_YOU_GO = (
    "Pay-as-you-go — usage draws down prepaid credits first, then continues as overage and "
    "is invoiced automatically as it accrues."
)
#: ``BILLING_REASON_MESSAGE`` (src/lib/billing/billing-state.ts).
REASON_MESSAGES = {
    "no_payment_method": "Payment method required",
    "overage_not_available": "Add funds to continue",
    "debt_ceiling_reached": "Overage limit reached while payment is collected",
    "billing_unavailable": "Billing allowance could not be confirmed",
}


def usd_text(usd_micros: int) -> str:
    """``"2.00"``: dollars to the cent, as the ``Money.usd`` display string."""
    sign = "-" if usd_micros < 0 else ""
    cents = abs(usd_micros) // MICROS_PER_CENT
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def money(usd_micros: int) -> dict[str, str]:
    return {"usdMicros": str(usd_micros), "usd": usd_text(usd_micros), "currency": "USD"}


def dollars_text(usd_micros: int) -> str:
    """A plan ``priceAmount``: ``"0"`` or ``"20.00"`` (whole cents) or exact micros."""
    if usd_micros == 0:
        return "0"
    if usd_micros % MICROS_PER_CENT == 0:
        return usd_text(usd_micros)
    return f"{usd_micros // 1_000_000}.{usd_micros % 1_000_000:06d}"


def month_end(moment: datetime) -> datetime:
    """The calendar month's last millisecond (``resetsAt``: ``2026-12-31T23:59:59.999Z``)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC) - timedelta(milliseconds=1)


def _month_key(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


@dataclasses.dataclass
class Plan:
    id: str
    name: str
    type: str  # free | subscription | usage
    price_usd_micros: int = 0
    included_usd_micros: int | None = None
    billing_cycle: str = "monthly"
    status: str = "active"
    overage_rate_usd: str | None = None
    is_network_default: bool = False
    is_starter_default: bool = False

    @property
    def requires_payment_method(self) -> bool:
        """``planRequiresPaymentMethod``: a non-Starter usage plan or a priced subscription."""
        if self.type == "usage":
            return not self.is_starter_default
        return self.type == "subscription" and self.price_usd_micros > 0

    def sync_status(self, billing_on: bool) -> str:
        if self.type == "free":
            return "not_applicable"
        # Nothing is synced without OpenMeter (T#32 "pending", T#109 "not synced").
        return "synced" if billing_on else "pending"

    def as_v1(self, client_id: str, billing_on: bool) -> dict[str, Any]:
        sync: dict[str, Any] = {
            "status": self.sync_status(billing_on),
            "syncedAt": None,
            "errorCode": None,
            "errorMessage": None,
        }
        if self.type != "free":
            sync["openmeterPlanId"] = None
            sync["openmeterPlanVersion"] = None
        body: dict[str, Any] = {
            "id": self.id,
            "clientId": client_id,
            "name": self.name,
            "type": self.type,
            "priceAmount": dollars_text(self.price_usd_micros),
            "priceCurrency": "USD",
            "status": self.status,
            "phaseOutAt": None,
            "replacementPlanId": None,
            "includedUnits": None,
            "overageRateUsd": self.overage_rate_usd,
            "includedUsdMicros": (
                None if self.included_usd_micros is None else str(self.included_usd_micros)
            ),
            "billingCycle": self.billing_cycle,
            "chargeThresholdUsdMicros": None,
        }
        if self.type == "usage":
            body["resolvedBehavior"] = PAY_AS_YOU_GO
        body.update(
            {
                "isNetworkDefault": self.is_network_default,
                "isStarterDefault": self.is_starter_default,
                "discoveryExcludedCapabilities": None,
                "discoveryProfileId": None,
                "discoveryPolicy": None,
                "capabilities": [],
                "sync": sync,
            }
        )
        return body


@dataclasses.dataclass
class Card:
    id: str
    brand: str = "visa"
    last4: str = "4242"
    exp_month: int = 12
    exp_year: int = 2034

    def as_json(self, *, is_default: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "card",
            "brand": self.brand,
            "last4": self.last4,
            "expMonth": self.exp_month,
            "expYear": self.exp_year,
            "isDefault": is_default,
        }


@dataclasses.dataclass
class Subscription:
    id: str
    plan_id: str
    started_at: datetime
    cancel_at_period_end: bool = False


@dataclasses.dataclass
class Invoice:
    id: str
    number: str
    status: str
    total_usd_micros: int
    issued_at: datetime
    invoice_type: str  # stripe_connect | payment | auto_topup

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.number,
            "status": self.status,
            "currency": "USD",
            "totalAmount": usd_text(self.total_usd_micros),
            "issuedAt": _iso(self.issued_at),
            "invoiceType": self.invoice_type,
            "paymentMethodBrand": "visa",
            "paymentFailureMessage": None,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


@dataclasses.dataclass
class Customer:
    """One payer's OpenMeter customer (``sbx_eu_…``; the owner's under owner_rollup)."""

    key: str
    prepaid_usd_micros: int = 0  # negative = unbilled overage debt
    lifetime_granted_usd_micros: int = 0
    included_consumed: dict[str, int] = dataclasses.field(default_factory=dict)
    cards: list[Card] = dataclasses.field(default_factory=list)
    default_card_id: str | None = None
    subscription: Subscription | None = None
    auto_top_up_enabled: bool = False
    auto_top_up_usd_micros: int | None = None
    invoices: list[Invoice] = dataclasses.field(default_factory=list)
    grant_keys: set[str] = dataclasses.field(default_factory=set)

    @property
    def has_default_card(self) -> bool:
        return self.default_card_id is not None


@dataclasses.dataclass
class CheckoutSession:
    """A Stripe Checkout session: ``payment`` (top-up) or ``setup`` (save a card)."""

    id: str
    mode: str
    customer_key: str
    success_url: str
    cancel_url: str
    amount_usd_micros: int | None = None
    status: str = "open"  # open | complete
    credited: bool = False
    created_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode,
            "customer": self.customer_key,
            "amountUsdMicros": (
                None if self.amount_usd_micros is None else str(self.amount_usd_micros)
            ),
            "status": self.status,
            "credited": self.credited,
            "successUrl": self.success_url,
            "cancelUrl": self.cancel_url,
        }


class BillingBook:
    """Billing state of the sandbox's one app (all synchronous: no awaits inside)."""

    def __init__(self, app_id: str, owner_id: str, defaults: BillingDefaults) -> None:
        self.app_id = app_id
        self.owner_id = owner_id
        self.mode = defaults.mode
        self.enabled = defaults.enabled
        self.connect_ready = defaults.connect_ready
        self.credit_delay_seconds = defaults.credit_delay_seconds
        self.soft_negative_usd_micros: int | None = None
        self.plans: dict[str, Plan] = {}
        for plan in (
            Plan(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app_id}:{NETWORK_DEFAULT_PLAN}")),
                name=NETWORK_DEFAULT_PLAN,
                type="free",
                is_network_default=True,
            ),
            Plan(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app_id}:{STARTER_PLAN}")),
                name=STARTER_PLAN,
                type="usage",
                included_usd_micros=STARTER_INCLUDED_USD_MICROS,
                is_starter_default=True,
            ),
        ):
            self.plans[plan.id] = plan
        self.customers: dict[str, Customer] = {}
        self.sessions: dict[str, CheckoutSession] = {}
        #: Owner top-ups forward ``Idempotency-Key`` to Stripe: the same key, the same session.
        self.idempotent_sessions: dict[str, str] = {}

    # --- config ---------------------------------------------------------------------------

    def as_json(self, *, open_meter_enabled: bool) -> dict[str, Any]:
        return {
            "billingMode": self.mode,
            "billingEnabled": self.enabled,
            "billingOn": self.is_on(open_meter_enabled),
            "connectReady": self.connect_ready,
            "creditDelaySeconds": self.credit_delay_seconds,
            "softNegativeUsdMicros": (
                None
                if self.soft_negative_usd_micros is None
                else str(self.soft_negative_usd_micros)
            ),
        }

    def is_on(self, open_meter_enabled: bool) -> bool:
        return self.enabled and open_meter_enabled

    @property
    def is_merchant(self) -> bool:
        return self.mode == "merchant"

    @property
    def ceiling_usd_micros(self) -> int:
        return (
            DEFAULT_CEILING_USD_MICROS
            if self.soft_negative_usd_micros is None
            else self.soft_negative_usd_micros
        )

    @property
    def starter(self) -> Plan:
        return next(plan for plan in self.plans.values() if plan.is_starter_default)

    def add_plan(self, plan: Plan) -> Plan:
        self.plans[plan.id] = plan
        return plan

    # --- customers ------------------------------------------------------------------------

    def customer_key(self, external_user_id: str | None) -> str:
        """``sbx_eu_{id}`` in merchant mode (stripe_livemode=false), else the owner."""
        if self.is_merchant and external_user_id is not None:
            return f"sbx_eu_{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.app_id}:{external_user_id}')}"
        return self.owner_id

    def customer(self, key: str) -> Customer:
        found = self.customers.get(key)
        if found is None:
            found = self.customers[key] = Customer(key=key)
        return found

    def live_plan(self, customer: Customer) -> Plan:
        if customer.subscription is not None:
            plan = self.plans.get(customer.subscription.plan_id)
            if plan is not None:
                return plan
        return self.starter

    def included_total(self, customer: Customer) -> int:
        return self.live_plan(customer).included_usd_micros or 0

    def included_consumed(self, customer: Customer, now: datetime) -> int:
        return customer.included_consumed.get(_month_key(now), 0)

    def included_remaining(self, customer: Customer, now: datetime) -> int:
        return max(0, self.included_total(customer) - self.included_consumed(customer, now))

    def spendable(self, customer: Customer, now: datetime) -> int:
        """Prepaid credit (a debt is not credit) + included usage left this month."""
        return max(0, customer.prepaid_usd_micros) + self.included_remaining(customer, now)

    def set_included_consumed(self, customer: Customer, usd_micros: int, now: datetime) -> None:
        customer.included_consumed[_month_key(now)] = usd_micros

    def unbilled_debt(self, customer: Customer) -> int:
        return max(0, -customer.prepaid_usd_micros)

    def overage_eligible(self, customer: Customer) -> bool:
        """Merchant: Connect ready, a default card and a plan that allows overage (§8)."""
        return (
            self.is_merchant
            and self.connect_ready
            and customer.has_default_card
            and self.live_plan(customer).requires_payment_method
        )

    def consume(self, customer: Customer, usd_micros: int, now: datetime) -> None:
        """Metered network fee: the plan's included usage first, then prepaid credit."""
        from_included = min(usd_micros, self.included_remaining(customer, now))
        month = _month_key(now)
        customer.included_consumed[month] = customer.included_consumed.get(month, 0) + (
            from_included
        )
        customer.prepaid_usd_micros -= usd_micros - from_included

    def grant(self, customer: Customer, usd_micros: int, *, key: str) -> bool:
        """A prepaid credit grant, once per ``key`` (Konnect 409 = already granted)."""
        if key in customer.grant_keys:
            return False
        customer.grant_keys.add(key)
        customer.prepaid_usd_micros += usd_micros
        customer.lifetime_granted_usd_micros += usd_micros
        return True

    def refusal(self, customer: Customer, now: datetime) -> str | None:
        """The mint/re-auth gate (§8): ``None`` to allow, else the denial reason code.

        Spendable > 0 allows; else a merchant auto top-up (enabled, a card, Connect
        ready) grants its amount once per PaymentIntent and allows; else overage
        eligibility and the soft-negative ceiling decide (``src/lib/oidc/signer-balance-gate.ts``,
        ``src/lib/stripe/auto-topup.ts``, ``src/lib/billing/soft-negative-gate.ts``).
        """
        if self.spendable(customer, now) > 0:
            return None
        if self.auto_top_up(customer):
            return None
        if not self.overage_eligible(customer):
            return "overage_not_available" if customer.has_default_card else "no_payment_method"
        ceiling = self.ceiling_usd_micros
        if ceiling and self.unbilled_debt(customer) >= ceiling:
            return "debt_ceiling_reached"
        return None

    def auto_top_up(self, customer: Customer) -> bool:
        """An off-session PaymentIntent for the saved amount, granted synchronously
        (key ``autotopup:{pi_id}``); False when it is skipped (not merchant, Connect not
        ready, no card, disabled)."""
        if not (
            self.is_merchant
            and self.connect_ready
            and customer.has_default_card
            and customer.auto_top_up_enabled
        ):
            return False
        amount = customer.auto_top_up_usd_micros or DEFAULT_AUTO_TOP_UP_USD_MICROS
        intent = f"pi_{secrets.token_hex(12)}"
        self.grant(customer, amount, key=f"autotopup:{intent}")
        self.new_invoice(customer, total_usd_micros=amount, invoice_type="auto_topup")
        return True

    # --- checkout sessions ----------------------------------------------------------------

    def new_session(
        self,
        *,
        mode: str,
        customer_key: str,
        success_url: str,
        cancel_url: str,
        amount_usd_micros: int | None = None,
    ) -> CheckoutSession:
        session = CheckoutSession(
            id=f"cs_test_{secrets.token_hex(24)}",
            mode=mode,
            customer_key=customer_key,
            success_url=success_url,
            cancel_url=cancel_url,
            amount_usd_micros=amount_usd_micros,
        )
        self.sessions[session.id] = session
        return session

    def save_card(self, customer: Customer) -> Card:
        card = Card(id=f"pm_{secrets.token_hex(12)}")
        customer.cards.append(card)
        customer.default_card_id = card.id
        return card

    def new_invoice(
        self, customer: Customer, *, total_usd_micros: int, invoice_type: str
    ) -> Invoice:
        invoice = Invoice(
            id=f"in_{secrets.token_hex(12)}",
            number=f"SBX-{len(customer.invoices) + 1:04d}",
            status="paid",
            total_usd_micros=total_usd_micros,
            issued_at=datetime.now(UTC),
            invoice_type=invoice_type,
        )
        customer.invoices.append(invoice)
        return invoice
