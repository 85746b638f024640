"""Plans, per-user billing accounts, holds, and the append-only ledger.

What users pay is exact integer **USD micros** (1 USD = 1,000,000; the unit pymthouse
bills in); what the network costs is exact integer **wei**. Both are stored in the
exact big-integer columns of ``billing.fields`` (``*_micros`` and ``*_wei`` names say
which). Every usage charge records its network fee in wei, the ETH/USD rate it was
converted at, and where and when that rate came from (docs/billing.md). The ledger is
the record: every change
of an account's ``balance_micros`` or ``held_micros`` is one or more ``LedgerEntry`` rows
written in the same transaction, under the account's row lock, so that for every
account ``balance_micros == Σ credit − Σ debit`` and ``held_micros == Σ hold − Σ release``
over its entries (``billing.selectors.account_ledger_totals`` checks it). Entries are
never updated or deleted (model guards here, read-only admin, and a database trigger
in migration 0002); a mistake is fixed by a new ``correction`` entry.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, NoReturn

from django.conf import settings
from django.db import models

from billing.fields import WeiAmountField, WeiField


class PlanType(models.TextChoices):
    FREE = "free", "Free"
    SUBSCRIPTION = "subscription", "Subscription"
    USAGE = "usage", "Usage-based"


class Plan(models.Model):
    """What a user may generate and what each image costs them.

    * ``free``: ``monthly_generation_allowance`` images per calendar month (UTC), no charge.
    * ``subscription``: images while the account's subscription period is active, at most
      ``monthly_generation_cap`` per month if set; ``subscription_fee_micros`` is recorded as
      a ``subscription_fee`` ledger entry at each renewal (collecting it is out of scope).
    * ``usage``: prepaid credit; each image debits its network fee in USD × ``multiplier_numerator
      / multiplier_denominator`` (rounded up to a whole micro), or ``flat_price_micros`` if set.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    plan_type = models.CharField(max_length=16, choices=PlanType.choices)
    monthly_generation_allowance = models.PositiveIntegerField(null=True, blank=True)
    monthly_generation_cap = models.PositiveIntegerField(null=True, blank=True)
    subscription_fee_micros = WeiAmountField(default=0)
    multiplier_numerator = models.PositiveBigIntegerField(default=1)
    multiplier_denominator = models.PositiveBigIntegerField(default=1)
    flat_price_micros = WeiField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(plan_type__in=PlanType.values), name="billing_plan_type_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(multiplier_denominator__gte=1),
                name="billing_plan_multiplier_denominator_positive",
            ),
            models.CheckConstraint(
                condition=~models.Q(plan_type=PlanType.FREE)
                | models.Q(monthly_generation_allowance__isnull=False),
                name="billing_plan_free_has_allowance",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def multiplier_text(self) -> str:
        if self.multiplier_denominator == 1:
            return f"× {self.multiplier_numerator}"
        return f"× {self.multiplier_numerator}/{self.multiplier_denominator}"


class Account(models.Model):
    """One per user: current plan, balance and held amount (both exact USD micros).

    ``available = balance − held`` is never negative (a CHECK constraint; WeiField
    itself keeps both non-negative). Holds exist only on usage-based plans, so on the
    other plans the constraint holds trivially.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="billing_account",
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="accounts")
    balance_micros = WeiAmountField(default=0)
    held_micros = WeiAmountField(default=0)
    suspended = models.BooleanField(default=False)
    suspended_reason = models.CharField(max_length=500, blank=True, default="")
    subscription_starts_at = models.DateTimeField(null=True, blank=True)
    subscription_ends_at = models.DateTimeField(null=True, blank=True)
    low_balance_notified_at = models.DateTimeField(null=True, blank=True)
    #: The lowest low-balance threshold (``BILLING_LOW_BALANCE_THRESHOLDS_MICROS``) the
    #: user was told about (or was already below when a credit re-armed the rest); null
    #: when every threshold is armed. Changed under the account lock with the entry that
    #: crossed it, so concurrent settlements mail once (``billing.services.low_balance``).
    low_balance_notified_micros = WeiField(null=True, blank=True)
    #: A change the user scheduled for the end of the subscription period (a downgrade
    #: or a cancellation); applied by ``subscriptions.pending_change_apply``.
    pending_plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(balance_micros__gte=models.F("held_micros")),
                name="billing_account_available_non_negative",
            ),
            # Each amount on its own too: a raw write that sets both negative would
            # otherwise pass the comparison above (WeiField parsing is Python only).
            models.CheckConstraint(
                condition=models.Q(balance_micros__gte=0),
                name="billing_account_balance_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(held_micros__gte=0), name="billing_account_held_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"account of {self.user_id}"

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.held_micros


class PlanAssignment(models.Model):
    """History of an account's plans: one open row (``ended_at`` null) per account."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="plan_history")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ("-started_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(ended_at__isnull=True),
                name="billing_plan_assignment_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan_id} from {self.started_at:%Y-%m-%d}"


class EntryKind(models.TextChoices):
    GRANT = "grant", "Grant"
    DEDUCT = "deduct", "Deduct"
    HOLD = "hold", "Hold"
    HOLD_RELEASE = "hold_release", "Hold release"
    USAGE_DEBIT = "usage_debit", "Usage debit"
    SUBSCRIPTION_FEE = "subscription_fee", "Subscription fee"
    CORRECTION = "correction", "Correction"
    #: Credits back the usage debit of an image the network did not deliver.
    REFUND = "refund", "Refund"
    #: Credit bought with a card (one per Stripe PaymentIntent, key ``purchase:<pi>``).
    PURCHASE = "purchase", "Card purchase"
    #: A card payment taken back (a Stripe refund or dispute): debits what is available.
    PAYMENT_REVERSAL = "payment_reversal", "Card payment reversed"
    #: Merchant mode: growth of pymthouse's ``lifetimeGrantedUsdMicros`` (a top-up landed).
    WALLET_CREDIT = "wallet_credit", "pymthouse wallet credit"
    #: Merchant mode: pymthouse's ``consumedUsdMicros`` beyond what local usage debits explain.
    WALLET_DEBIT = "wallet_debit", "pymthouse wallet usage"
    #: Staff (or demo) credit that is spent before purchased credit and may expire; its
    #: lot (``PromotionalCredit``) tracks what is left of it.
    PROMOTION = "promotion", "Promotional credit"
    #: Takes back what an expired promotional lot had left, once per lot.
    PROMOTION_EXPIRY = "promotion_expiry", "Promotional credit expired"


class EntryEffect(models.TextChoices):
    """How an entry moves the account: balance up/down, held up/down, or record only."""

    CREDIT = "credit", "Credit (balance +)"
    DEBIT = "debit", "Debit (balance −)"
    HOLD = "hold", "Hold (held +)"
    RELEASE = "release", "Release (held −)"
    RECORD = "record", "Record only"


#: Which effects each kind may have (a CHECK constraint mirrors it).
KIND_EFFECTS: dict[str, tuple[str, ...]] = {
    EntryKind.GRANT: (EntryEffect.CREDIT,),
    EntryKind.DEDUCT: (EntryEffect.DEBIT,),
    EntryKind.HOLD: (EntryEffect.HOLD,),
    EntryKind.HOLD_RELEASE: (EntryEffect.RELEASE,),
    EntryKind.USAGE_DEBIT: (EntryEffect.DEBIT,),
    # Paid by card (billing/services/subscriptions.py), recorded: no credit moves.
    EntryKind.SUBSCRIPTION_FEE: (EntryEffect.RECORD,),
    EntryKind.CORRECTION: (EntryEffect.CREDIT, EntryEffect.DEBIT),
    EntryKind.REFUND: (EntryEffect.CREDIT,),
    EntryKind.PURCHASE: (EntryEffect.CREDIT,),
    # A debit of reversed credit; a record of a reversed subscription fee (no credit moved).
    EntryKind.PAYMENT_REVERSAL: (EntryEffect.DEBIT, EntryEffect.RECORD),
    EntryKind.WALLET_CREDIT: (EntryEffect.CREDIT,),
    EntryKind.WALLET_DEBIT: (EntryEffect.DEBIT,),
    EntryKind.PROMOTION: (EntryEffect.CREDIT,),
    EntryKind.PROMOTION_EXPIRY: (EntryEffect.DEBIT,),
}


class RateSource(models.TextChoices):
    METERED = "metered", "pymthouse metering"
    CONFIGURED = "configured", "configured rate"
    MIGRATION = "migration", "wei balance migration"


class LedgerImmutableError(Exception):
    """Ledger entries are append-only."""


class LedgerEntryQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise LedgerImmutableError("ledger entries are never updated; append a correction")

    def delete(self) -> NoReturn:
        raise LedgerImmutableError("ledger entries are never deleted; append a correction")


class LedgerEntry(models.Model):
    """One immutable movement of wei on an account (or a record of a fee).

    ``idempotency_key`` is unique: repeating an operation with the same key returns the
    entry already written instead of writing another. ``generation`` has no database
    constraint, so deleting an image never touches its entries. ``usage_ref`` names the
    mirrored pymthouse usage row an entry comes from (``manifest:<manifestId>``).
    ``balance_after_micros``/``held_after_micros`` are the account's totals right after it.
    """

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    effect = models.CharField(max_length=10, choices=EntryEffect.choices)
    amount_micros = WeiAmountField()
    balance_after_micros = WeiAmountField()
    held_after_micros = WeiAmountField()
    reason = models.CharField(max_length=500)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Staff member who did it; empty for the system.",
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    generation = models.ForeignKey(
        "inference.Generation",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    usage_ref = models.CharField(max_length=200, blank=True, default="", db_index=True)
    #: A usage charge's network side (staff only): the fee paid in wei, the ETH/USD rate
    #: it was converted at (USD per ETH, exact decimal text), and that rate's origin.
    network_fee_wei = WeiField(null=True, blank=True)
    eth_usd_rate = models.CharField(max_length=64, blank=True, default="")
    rate_source = models.CharField(max_length=16, choices=RateSource.choices, blank=True)
    rate_at = models.DateTimeField(null=True, blank=True)
    corrects = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="corrections"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects: ClassVar[models.Manager[LedgerEntry]] = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-created_at"], name="ledger_account_recent"),
            models.Index(fields=["generation"], name="ledger_generation"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    *[
                        models.Q(kind=kind, effect__in=effects)
                        for kind, effects in KIND_EFFECTS.items()
                    ],
                    _connector=models.Q.OR,
                ),
                name="billing_ledger_kind_effect",
            ),
            models.CheckConstraint(
                condition=models.Q(balance_after_micros__gte=models.F("held_after_micros")),
                name="billing_ledger_available_non_negative",
            ),
            models.CheckConstraint(
                condition=~models.Q(reason=""), name="billing_ledger_reason_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_micros} µUSD ({self.idempotency_key})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerImmutableError("ledger entries are never updated; append a correction")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LedgerImmutableError("ledger entries are never deleted; append a correction")


class HoldStatus(models.TextChoices):
    OPEN = "open", "Open"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"


class Hold(models.Model):
    """The credit reserved for one generation until it is charged or released.

    The state of a hold; its money movements are ledger entries (``hold``, then
    ``hold_release`` plus a ``usage_debit`` when settled).
    """

    generation_id = models.UUIDField(unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    plan = models.ForeignKey(
        Plan,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The plan that admitted the image; its price applies when it is charged.",
    )
    amount_micros = WeiAmountField()
    status = models.CharField(
        max_length=10, choices=HoldStatus.choices, default=HoldStatus.OPEN, db_index=True
    )
    charged_micros = WeiField(null=True, blank=True)
    #: The most this image's payment may cost at the network (wei): the fee the hold
    #: covers at ``eth_usd_rate``. The signer's ``maxPrice`` is derived from it.
    max_fee_wei = WeiField(null=True, blank=True)
    eth_usd_rate = models.CharField(max_length=64, blank=True, default="")
    #: What the charge came to beyond the hold: never debited, borne by the operator.
    absorbed_micros = WeiAmountField(default=0)
    #: The image in words (prompt excerpt and model), for the entries' reasons.
    description = models.CharField(max_length=200, blank=True, default="")
    resolution = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    #: When the stale-hold sweep last looked at this hold and left it open; the sweep
    #: takes the least recently looked-at first, so no hold waits behind others.
    swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(
                fields=["swept_at", "created_at"],
                condition=models.Q(status="open"),
                name="billing_hold_open_sweep_order",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount_micros__gte=0), name="billing_hold_amount_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(charged_micros__isnull=True) | models.Q(charged_micros__gte=0),
                name="billing_hold_charged_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"hold {self.amount_micros} µUSD for {self.generation_id} ({self.status})"


class PromotionalCredit(models.Model):
    """One lot of promotional credit: what a ``promotion`` entry granted, and what is left.

    Promotional credit is spent before purchased credit (anything else on the balance):
    every debit, under the account lock, takes what it can from the open lots first,
    earliest expiry first (lots without expiry last, then oldest), so that for every
    account ``Σ remaining_micros of open lots ≤ balance_micros``. When ``expires_at``
    passes, one ``promotion_expiry`` entry (key ``promotion_expiry:<lot id>``) takes back
    what is left of the lot and not held by images in progress, and the lot closes
    (``closed_at``). The lot is state beside the ledger, like a ``Hold``; its money
    movements are ledger entries.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="promotions")
    entry = models.OneToOneField(
        "LedgerEntry", on_delete=models.PROTECT, related_name="promotional_credit"
    )
    amount_micros = WeiAmountField()
    remaining_micros = WeiAmountField()
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    #: When the lot stopped counting: expired (``expiry_entry``) or spent to zero.
    closed_at = models.DateTimeField(null=True, blank=True)
    expiry_entry = models.OneToOneField(
        "LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="expired_promotional_credit",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        verbose_name_plural = "promotional credit"
        indexes = [
            models.Index(
                fields=["expires_at"],
                condition=models.Q(closed_at__isnull=True),
                name="billing_promo_open_expiry",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(remaining_micros__gte=0)
                & models.Q(remaining_micros__lte=models.F("amount_micros")),
                name="billing_promo_remaining_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"promotional {self.remaining_micros}/{self.amount_micros} µUSD ({self.account_id})"


class LedgerRejection(models.Model):
    """An operation refused for lack of funds, kept by its idempotency key.

    Retrying the same key later (say after a top-up) is refused again; a deliberate
    new attempt carries a new key.
    """

    idempotency_key = models.CharField(max_length=200, unique=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    amount_micros = WeiAmountField()
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"refused {self.kind} {self.amount_micros} µUSD ({self.idempotency_key})"


class ObservedPrice(models.Model):
    """The last runner price paid for a model: what the next hold for it is based on.

    A database row, not a cache entry, so admission and settlement never depend on
    the cache being up (a Redis restart must not fail a submission or a payment).
    """

    model_id = models.CharField(max_length=200, unique=True)
    price_wei = WeiAmountField()
    units_per_payment = models.PositiveBigIntegerField()
    observed_at = models.DateTimeField(auto_now=True)

    #: A price that jumped more than ``BILLING_PRICE_JUMP_FACTOR`` above this one: not
    #: adopted as the base of holds, shown to staff until a staff member adopts it.
    jumped_price_wei = WeiField(null=True, blank=True)
    jumped_units_per_payment = models.PositiveBigIntegerField(null=True, blank=True)
    jumped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.model_id}: {self.price_wei} wei x {self.units_per_payment}"


class MeteredRate(models.Model):
    """An ETH/USD rate taken from pymthouse's own metering: a mirrored manifest's exact
    USD figure over its ``feeWei``. The newest one, while fresh, converts fees."""

    eth_usd_rate = models.CharField(max_length=64, help_text="USD per ETH, exact decimal")
    usage_ref = models.CharField(max_length=200, blank=True, default="")
    observed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-observed_at", "-id")

    def __str__(self) -> str:
        return f"{self.eth_usd_rate} USD/ETH ({self.usage_ref or 'metering'})"


class StripeCustomer(models.Model):
    """The account's customer at the operator's Stripe, its saved card and auto top-up.

    Holds ids and display facts only (brand, last 4 digits, expiry); no card data.
    """

    account = models.OneToOneField(
        Account, on_delete=models.PROTECT, primary_key=True, related_name="stripe_customer"
    )
    customer_id = models.CharField(max_length=255, unique=True)
    payment_method_id = models.CharField(max_length=255, blank=True, default="")
    card_brand = models.CharField(max_length=32, blank=True, default="")
    card_last4 = models.CharField(max_length=4, blank=True, default="")
    card_exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    card_exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    auto_topup_enabled = models.BooleanField(default=False)
    #: Below this available balance (USD micros) an off-session payment of
    #: ``auto_topup_amount_micros`` is made with the saved card.
    auto_topup_threshold_micros = WeiAmountField(default=0)
    auto_topup_amount_micros = WeiAmountField(default=0)
    #: Why auto top-up turned itself off (a refused card), shown on the page.
    auto_topup_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.customer_id} ({self.card_brand} {self.card_last4})"

    @property
    def has_card(self) -> bool:
        return bool(self.payment_method_id)


class PaymentStatus(models.TextChoices):
    #: Created, not yet sent to Stripe.
    CREATED = "created", "Created"
    #: Claimed by the one request that sends it (a double click sends nothing more).
    SUBMITTED = "submitted", "Sent to Stripe"
    REQUIRES_ACTION = "requires_action", "Waiting for the bank (3-D Secure)"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Paid"
    FAILED = "failed", "Failed"


#: A payment in these states may still take money: one auto top-up at a time.
PAYMENT_IN_FLIGHT = (
    PaymentStatus.CREATED,
    PaymentStatus.SUBMITTED,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.PROCESSING,
)


class PaymentPurpose(models.TextChoices):
    PURCHASE = "purchase", "Add credit"
    AUTO_TOPUP = "auto_topup", "Auto top-up"
    #: A plan change that costs money now (``plan``): fulfilled, never credited.
    SUBSCRIPTION = "subscription", "Subscription"
    #: The plan fee off-session before the period ends (``plan``, ``renews_period_end``).
    RENEWAL = "renewal", "Subscription renewal"


#: Purposes that pay for a plan (``subscription_fulfil``) instead of buying credit.
PLAN_PURPOSES = (PaymentPurpose.SUBSCRIPTION, PaymentPurpose.RENEWAL)


class Payment(models.Model):
    """One attempt to take a card payment: one Stripe PaymentIntent at most.

    ``request_key`` comes from the form that asked for it (or the auto top-up run), so a
    repeated submit finds this row instead of paying again; its own ``id`` is the
    idempotency key sent to Stripe and the ``pixelhouse_payment`` metadata the webhook
    finds it by. Crediting is the ledger's ``purchase:<payment_intent_id>`` entry.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="payments")
    purpose = models.CharField(max_length=16, choices=PaymentPurpose.choices)
    amount_micros = WeiAmountField()
    request_key = models.CharField(max_length=64, unique=True)
    payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.CREATED
    )
    failure_message = models.CharField(max_length=300, blank=True, default="")
    #: The plan a subscription or renewal payment pays for (``None`` for credit).
    plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    #: A renewal: the end of the period it renews (one renewal per account and period).
    renews_period_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=PaymentStatus.values),
                name="billing_payment_status_valid",
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(purpose=PaymentPurpose.AUTO_TOPUP, status__in=PAYMENT_IN_FLIGHT),
                name="billing_payment_one_auto_topup_in_flight",
            ),
            models.UniqueConstraint(
                fields=["account", "renews_period_end"],
                condition=models.Q(purpose=PaymentPurpose.RENEWAL),
                name="billing_payment_one_renewal_per_period",
            ),
            models.CheckConstraint(
                condition=models.Q(purpose__in=PLAN_PURPOSES, plan__isnull=False)
                | (~models.Q(purpose__in=PLAN_PURPOSES) & models.Q(plan__isnull=True)),
                name="billing_payment_plan_iff_plan_purpose",
            ),
        ]

    def __str__(self) -> str:
        return f"payment {self.id} {self.amount_micros} µUSD ({self.status})"


class StripeEvent(models.Model):
    """A webhook event processed (its effects committed in the same transaction)."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    outcome = models.CharField(max_length=200)
    processed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}: {self.outcome}"


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


# --- merchant mode (BILLING_MODE=merchant; docs/billing.md "Merchant mode") -----------


class MerchantWallet(models.Model):
    """The local copy of a user's pymthouse wallet and billing state (merchant mode).

    ``granted_micros`` and ``consumed_micros`` are the last values seen of pymthouse's
    monotone counters ``lifetimeGrantedUsdMicros`` / ``consumedUsdMicros``; the mirror
    (``billing.services.wallet``) credits the growth of the first and debits the part of
    the second that local usage debits (entries after ``ledger_baseline_id``) have not
    already explained. ``can_spend``/``status``/``reason`` are pymthouse's
    ``billingState`` as last read; admission respects them.
    """

    account = models.OneToOneField(
        Account, on_delete=models.PROTECT, primary_key=True, related_name="merchant_wallet"
    )
    granted_micros = WeiAmountField(default=0)
    consumed_micros = WeiAmountField(default=0)
    #: ``funding.includedUsage``: the month (its ``resetsAt`` date) and what the plan's
    #: included usage had paid in it at the last read (given back as credit).
    included_period = models.CharField(max_length=32, blank=True, default="")
    included_consumed_micros = WeiAmountField(default=0)
    #: pymthouse's own ``balance.usdMicros`` as last read (shown to staff).
    upstream_balance_micros = WeiAmountField(default=0)
    #: Entries up to this id predate the mirror: they explain no pymthouse consumption.
    ledger_baseline_id = models.BigIntegerField(default=0)
    can_spend = models.BooleanField(default=False)
    status = models.CharField(max_length=32, blank=True, default="")
    reason = models.CharField(max_length=64, blank=True, default="")
    has_payment_method = models.BooleanField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    #: The last refusal pymthouse gave any billing call for this user, and when (staff).
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"pymthouse wallet of {self.account_id}"


class TopUpStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the payment"
    CREDITED = "credited", "Credited"
    CANCELLED = "cancelled", "Cancelled at checkout"


class PendingTopUp(models.Model):
    """One "Add credit" click in merchant mode: pymthouse's checkout session for it.

    ``click_key`` is the form's nonce (a double submit reuses the same session) and
    ``session_id`` the ``cs_…`` pymthouse returned; the row is written only after
    pymthouse accepted the top-up, so a refusal leaves nothing behind. The credit itself
    is never written from here: it arrives through the wallet mirror (the growth of
    ``lifetimeGrantedUsdMicros``); this row only tells the return page when it showed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="top_ups")
    click_key = models.CharField(max_length=64, unique=True)
    session_id = models.CharField(max_length=200, unique=True)
    checkout_url = models.URLField(max_length=2000)
    amount_micros = WeiAmountField()
    #: The mirror's granted counter when the checkout began: the credit has shown once
    #: the counter reaches this plus ``amount_micros``.
    granted_before_micros = WeiAmountField(default=0)
    status = models.CharField(
        max_length=16, choices=TopUpStatus.choices, default=TopUpStatus.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=TopUpStatus.values),
                name="billing_pending_top_up_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"top-up {self.session_id} ({self.status})"
