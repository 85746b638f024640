"""Card payments through the operator's own Stripe account (``BILLING_MODE=owner_rollup``).

How a purchase becomes credit (docs/billing.md, "Card payments"):

1. ``card_setup_start``: the account's Stripe customer (created once) and a SetupIntent;
   Stripe.js saves the card in the browser (``confirmCardSetup``), ``card_setup_finish``
   records its brand, last 4 digits and expiry.
2. ``credit_purchase``: one ``Payment`` row per attempt, found again by the form's
   ``request_key`` (a second submit of the same click pays nothing more); exactly one
   request claims it (a conditional UPDATE) and creates + confirms the PaymentIntent with
   the saved card. 3-D Secure answers ``requires_action``: the page runs
   ``confirmCardPayment`` and ``payment_refresh`` reads the outcome from Stripe.
3. Crediting is ``_intent_apply``: under the account lock, a ``purchase`` ledger entry
   keyed ``purchase:<payment_intent_id>``, so the synchronous answer, the webhook, a
   replay, a duplicate or a concurrent delivery credit it exactly once, in any order.
   The amount is what Stripe says it charged (cents × 10,000 = USD micros).
4. Webhooks (``stripe_event_process``) never trust the event's copy of an object whose
   state can move: the PaymentIntent and the charge are fetched from Stripe. A refund
   (``charge.refunded``, per refund id) or a dispute (``charge.dispute.created``, per
   dispute id) debits back what it took (``payment_reversal``); when the credit was
   spent already, what is available is debited and the account is suspended with the
   shortfall in dollars.

Nothing here stores or logs the secret key or a client secret; task arguments are ids.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from billing import tasks
from billing.errors import BillingError
from billing.lock_objects import account_lock
from billing.models import (
    PAYMENT_IN_FLIGHT,
    PLAN_PURPOSES,
    Account,
    EntryEffect,
    EntryKind,
    LedgerEntry,
    Payment,
    PaymentPurpose,
    PaymentStatus,
    Plan,
    StripeCustomer,
    StripeEvent,
)
from billing.modes import payments_enabled
from billing.money import format_usd
from billing.plan_policy import plan_policy
from billing.services.accounts import account_change_plan
from billing.services.ledger import ledger_entry_append
from billing.services.subscriptions import (
    PlanChangeError,
    PlanChangeQuote,
    cancel_target,
    card_amount,
    plan_change_quote,
    subscription_fulfil,
)
from integrations.stripe import (
    CardInfo,
    PaymentIntentInfo,
    RefundInfo,
    SetupIntentInfo,
    StripeCardError,
    StripeError,
    StripeRequestError,
    StripeUnavailableError,
    WebhookEvent,
    get_gateway,
)

logger = logging.getLogger(__name__)

#: Stripe amounts are in cents; the ledger is in USD micros.
MICROS_PER_CENT = 10_000
#: Metadata key naming our ``Payment`` on the PaymentIntent (found even when the
#: synchronous answer was lost before its id was stored).
PAYMENT_METADATA_KEY = "pixelhouse_payment"

_STATUS_FROM_STRIPE: dict[str, str] = {
    "succeeded": PaymentStatus.SUCCEEDED,
    "processing": PaymentStatus.PROCESSING,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "requires_capture": PaymentStatus.PROCESSING,
    "requires_confirmation": PaymentStatus.SUBMITTED,
    "requires_payment_method": PaymentStatus.FAILED,
    "canceled": PaymentStatus.FAILED,
}


class PaymentError(BillingError):
    """A payment that could not be made; ``message`` is for the person paying."""

    code = "payment_failed"
    status = 402


class PaymentsUnavailableError(PaymentError):
    """Card payments are off, or Stripe could not be reached (try again later)."""

    code = "payments_unavailable"
    status = 503


def _gateway_error(exc: StripeError) -> PaymentError:
    if isinstance(exc, StripeCardError):
        return PaymentError(exc.message or "Your card was declined.", code="card_declined")
    if isinstance(exc, StripeUnavailableError):
        return PaymentsUnavailableError(
            "The payment service is not answering. Nothing was charged by this attempt "
            "that we know of; try again in a minute."
        )
    return PaymentError("The payment could not be made. Try another card.")


def amount_validate(amount_micros: int) -> None:
    """Purchases are whole cents within ``BILLING_CREDIT_MIN/MAX_MICROS``."""
    low, high = settings.BILLING_CREDIT_MIN_MICROS, settings.BILLING_CREDIT_MAX_MICROS
    if amount_micros % MICROS_PER_CENT:
        raise PaymentError("Enter whole cents, such as 12.50.", code="invalid_amount")
    if not low <= amount_micros <= high:
        raise PaymentError(
            f"Choose an amount from {format_usd(low)} to {format_usd(high)}.",
            code="invalid_amount",
        )


# --- the customer and the saved card -------------------------------------------------


def stripe_customer_ensure(*, user: User) -> StripeCustomer:
    """The account's Stripe customer, created at Stripe the first time (keyed by user)."""
    existing = StripeCustomer.objects.filter(account_id=user.pk).first()
    if existing is not None:
        return existing
    try:
        customer_id = get_gateway().customer_create(
            email=user.email, user_ref=str(user.pk), idempotency_key=f"customer:{user.pk}"
        )
    except StripeError as exc:
        raise _gateway_error(exc) from exc
    with transaction.atomic():
        account = account_lock(user_id=user.pk)
        customer, _ = StripeCustomer.objects.get_or_create(
            account=account, defaults={"customer_id": customer_id}
        )
    return customer


def card_setup_start(*, user: User) -> SetupIntentInfo:
    """A SetupIntent for the browser to save a card on (its client secret is not stored)."""
    customer = stripe_customer_ensure(user=user)
    try:
        return get_gateway().setup_intent_create(customer_id=customer.customer_id)
    except StripeError as exc:
        raise _gateway_error(exc) from exc


def card_setup_finish(*, user: User, setup_intent_id: str) -> StripeCustomer:
    """Record the card a SetupIntent of this user's customer saved (read from Stripe)."""
    customer = stripe_customer_ensure(user=user)
    gateway = get_gateway()
    try:
        intent = gateway.setup_intent_retrieve(setup_intent_id)
        if intent.customer_id != customer.customer_id:
            raise PaymentError("That card was not saved for your account.", code="card_not_saved")
        if intent.status != "succeeded" or not intent.payment_method_id:
            raise PaymentError("The card was not saved. Try again.", code="card_not_saved")
        card = gateway.card_attach(
            payment_method_id=intent.payment_method_id, customer_id=customer.customer_id
        )
    except StripeError as exc:
        raise _gateway_error(exc) from exc
    return _card_store(user=user, card=card)


@transaction.atomic
def _card_store(*, user: User, card: CardInfo) -> StripeCustomer:
    account_lock(user_id=user.pk)
    customer = StripeCustomer.objects.get(account_id=user.pk)
    customer.payment_method_id = card.payment_method_id
    customer.card_brand = card.brand[:32]
    customer.card_last4 = card.last4[:4]
    customer.card_exp_month = card.exp_month or None
    customer.card_exp_year = card.exp_year or None
    customer.auto_topup_error = ""
    customer.full_clean()
    customer.save()
    logger.info("billing: user %s saved a %s card", user.pk, customer.card_brand)
    return customer


# --- purchases ---------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentResult:
    payment: Payment
    #: For ``confirmCardPayment`` when the bank asks for 3-D Secure; never stored.
    client_secret: str = ""


def credit_purchase(
    *,
    user: User,
    amount_micros: int,
    request_key: str,
    purpose: str = PaymentPurpose.PURCHASE,
) -> PaymentResult:
    """Charge the saved card ``amount_micros`` once for ``request_key`` and credit it.

    The same ``request_key`` again (a double click, a reload) returns the first attempt
    and charges nothing more. Raises ``PaymentError`` on a refused card (the attempt is
    recorded ``failed``) and ``PaymentsUnavailableError`` when Stripe cannot be reached
    (the attempt stays ``submitted``: the webhook tells what happened).
    """
    if not payments_enabled():
        raise PaymentsUnavailableError("Card payments are not available.")
    amount_validate(amount_micros)
    return _card_charge(
        user=user, amount_micros=amount_micros, request_key=request_key, purpose=purpose
    )


def _card_charge(
    *,
    user: User,
    amount_micros: int,
    request_key: str,
    purpose: str,
    plan: Plan | None = None,
    renews_period_end: datetime | None = None,
) -> PaymentResult:
    """One ``Payment`` for ``request_key``, claimed by exactly one caller and sent once."""
    customer = StripeCustomer.objects.filter(account_id=user.pk).first()
    if customer is None or not customer.has_card:
        raise PaymentError("Add a card first.", code="no_card")
    payment = _payment_open(
        user=user,
        amount_micros=amount_micros,
        request_key=request_key,
        purpose=purpose,
        plan=plan,
        renews_period_end=renews_period_end,
    )
    if payment is None:
        raise PaymentError("An automatic top-up is already in progress.", code="in_flight")
    claimed = Payment.objects.filter(pk=payment.pk, status=PaymentStatus.CREATED).update(
        status=PaymentStatus.SUBMITTED
    )
    if not claimed:
        payment.refresh_from_db()
        return PaymentResult(payment=payment)  # another request sent it: nothing more
    return _payment_send(payment=payment, customer=customer, user=user)


def _payment_open(
    *,
    user: User,
    amount_micros: int,
    request_key: str,
    purpose: str,
    plan: Plan | None = None,
    renews_period_end: datetime | None = None,
) -> Payment | None:
    """The attempt for ``request_key`` (created if new); ``None`` when an auto top-up is
    already in flight for the account (the partial unique constraint refused it)."""
    existing = Payment.objects.filter(request_key=request_key).first()
    if existing is not None:
        if (
            existing.account_id != user.pk
            or existing.amount_micros != amount_micros
            or existing.plan_id != (plan.pk if plan else None)
        ):
            raise PaymentError("This payment form was already used. Reload the page.")
        return existing
    try:
        with transaction.atomic():
            account = account_lock(user_id=user.pk)
            payment = Payment(
                account=account,
                purpose=purpose,
                amount_micros=amount_micros,
                request_key=request_key,
                plan=plan,
                renews_period_end=renews_period_end,
            )
            # The database decides uniqueness (IntegrityError below), never a pre-check that
            # a concurrent twin can pass too.
            payment.full_clean(validate_unique=False, validate_constraints=False)
            payment.save(force_insert=True)
            return payment
    except IntegrityError:
        again = Payment.objects.filter(request_key=request_key).first()
        if again is not None and again.account_id == user.pk:
            return again
        return None


def _payment_send(*, payment: Payment, customer: StripeCustomer, user: User) -> PaymentResult:
    off_session = payment.purpose in (PaymentPurpose.AUTO_TOPUP, PaymentPurpose.RENEWAL)
    try:
        intent = get_gateway().payment_intent_create(
            amount_cents=payment.amount_micros // MICROS_PER_CENT,
            customer_id=customer.customer_id,
            payment_method_id=customer.payment_method_id,
            off_session=off_session,
            metadata={PAYMENT_METADATA_KEY: str(payment.pk), "pixelhouse_user": str(user.pk)},
            idempotency_key=f"payment:{payment.pk}",
        )
    except StripeCardError as exc:
        _payment_fail(payment=payment, message=exc.message or "Your card was declined.")
        raise _gateway_error(exc) from exc
    except StripeError as exc:
        # Unknown whether Stripe created it: stays ``submitted``; the webhook (which finds
        # it by metadata) settles it, and the same click never sends it again.
        logger.warning("billing: payment %s outcome unknown (%s)", payment.pk, type(exc).__name__)
        raise _gateway_error(exc) from exc
    applied = _intent_apply(intent=intent)
    if applied is not None:
        payment = applied
    if off_session and payment.status == PaymentStatus.REQUIRES_ACTION:
        # Nobody is there to authenticate an automatic payment: it is a failure.
        _payment_fail(
            payment=payment, message="Your bank asked to confirm the payment; pay by hand."
        )
        payment.refresh_from_db()
    secret = intent.client_secret if payment.status == PaymentStatus.REQUIRES_ACTION else ""
    return PaymentResult(payment=payment, client_secret=secret)


def _payment_fail(*, payment: Payment, message: str) -> None:
    Payment.objects.filter(pk=payment.pk).exclude(status=PaymentStatus.SUCCEEDED).update(
        status=PaymentStatus.FAILED, failure_message=message[:300]
    )
    if payment.purpose == PaymentPurpose.AUTO_TOPUP:
        StripeCustomer.objects.filter(account_id=payment.account_id).update(
            auto_topup_enabled=False, auto_topup_error=f"Turned off: {message}"[:300]
        )


def payment_refresh(*, user: User, payment_id: uuid.UUID | str) -> Payment:
    """Read a payment's outcome from Stripe (after 3-D Secure in the page) and apply it."""
    payment = Payment.objects.filter(pk=payment_id, account_id=user.pk).first()
    if payment is None:
        raise PaymentError("No such payment.", code="not_found")
    if payment.payment_intent_id and payment.status != PaymentStatus.SUCCEEDED:
        try:
            intent = get_gateway().payment_intent_retrieve(payment.payment_intent_id)
        except StripeError as exc:
            raise _gateway_error(exc) from exc
        _intent_apply(intent=intent)
        payment.refresh_from_db()
    return payment


# --- applying Stripe's state (the synchronous answer and the webhooks) --------------


def _payment_for(intent: PaymentIntentInfo) -> Payment | None:
    payment = Payment.objects.filter(payment_intent_id=intent.id).first()
    if payment is None:
        ref = intent.metadata.get(PAYMENT_METADATA_KEY, "")
        try:
            payment = Payment.objects.filter(pk=uuid.UUID(ref)).first() if ref else None
        except ValueError:
            payment = None
    return payment


@transaction.atomic
def _intent_apply(*, intent: PaymentIntentInfo) -> Payment | None:
    """Bring our ``Payment`` to the PaymentIntent's state and credit a success once.

    ``None`` for a PaymentIntent that is not ours. Runs under the account lock; the
    ledger's ``purchase:<pi>`` key makes every repeat (and a concurrent twin) a no-op.
    """
    found = _payment_for(intent)
    if found is None:
        logger.warning("billing: payment intent %s is not one of ours", intent.id)
        return None
    account = account_lock(user_id=found.account_id)
    payment = Payment.objects.select_for_update().get(pk=found.pk)
    if payment.payment_intent_id not in (None, intent.id):
        logger.error("billing: payment %s already has another intent", payment.pk)
        return payment
    status = _STATUS_FROM_STRIPE.get(intent.status, payment.status)
    if payment.status == PaymentStatus.SUCCEEDED:
        status = PaymentStatus.SUCCEEDED  # a stale answer never undoes a success
    elif payment.status == PaymentStatus.FAILED and status != PaymentStatus.SUCCEEDED:
        status = PaymentStatus.FAILED  # given up here (e.g. an auto top-up asking for 3-D
        # Secure): only money actually taken brings it back, never "in flight" again
    fields = {"payment_intent_id": intent.id, "status": status}
    if status == PaymentStatus.FAILED and intent.error_message:
        fields["failure_message"] = intent.error_message[:300]
    changed = [name for name, value in fields.items() if getattr(payment, name) != value]
    for name in changed:
        setattr(payment, name, fields[name])
    if changed:
        payment.save(update_fields=[*changed, "updated_at"])
    if intent.status == "succeeded":
        if payment.purpose in PLAN_PURPOSES:
            _subscription_apply(account=account, payment=payment, intent=intent)
        else:
            _purchase_credit(account=account, payment=payment, intent=intent)
    return payment


def _subscription_apply(*, account: Account, payment: Payment, intent: PaymentIntentInfo) -> None:
    """A paid plan change or renewal: ``subscription_fulfil`` (once per PaymentIntent, by
    its ``subscription_fee:payment:<pi>`` key), re-derived at the payment's creation."""
    if intent.currency.lower() != "usd":
        logger.error("billing: intent %s is in %s, not fulfilled", intent.id, intent.currency)
        return
    assert payment.plan is not None  # billing_payment_plan_iff_plan_purpose
    subscription_fulfil(
        user=account.user,
        plan=payment.plan,
        amount_micros=intent.amount_cents * MICROS_PER_CENT,
        payment_ref=intent.id,
        paid_at=payment.created_at,
    )


def _purchase_credit(*, account: Account, payment: Payment, intent: PaymentIntentInfo) -> None:
    if intent.currency.lower() != "usd":
        logger.error("billing: intent %s is in %s, not credited", intent.id, intent.currency)
        return
    amount = intent.amount_cents * MICROS_PER_CENT
    if amount != payment.amount_micros:
        logger.error(
            "billing: payment intent %s charged %s µUSD, payment %s asked %s; crediting what "
            "was charged",
            intent.id,
            amount,
            payment.pk,
            payment.amount_micros,
        )
    label = "Auto top-up" if payment.purpose == PaymentPurpose.AUTO_TOPUP else "Credit bought"
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.PURCHASE,
        effect=EntryEffect.CREDIT,
        amount_micros=amount,
        reason=f"{label} by card ({format_usd(amount)}, Stripe {intent.id})",
        idempotency_key=f"purchase:{intent.id}",
    )
    logger.info("billing: payment %s credited (entry %s)", payment.pk, entry.pk)


def _reverse(
    *, account: Account, key: str, amount_micros: int, what: str, reference: str
) -> LedgerEntry | None:
    """Debit back a refunded or disputed card payment, at most what is available; the
    rest is a shortfall: the account is suspended with it stated in dollars."""
    if LedgerEntry.objects.filter(idempotency_key=key).exists():
        return None
    taken = min(amount_micros, account.available_micros)
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.PAYMENT_REVERSAL,
        effect=EntryEffect.DEBIT,
        amount_micros=taken,
        reason=f"Card payment {what} ({format_usd(amount_micros)}, Stripe {reference})",
        idempotency_key=key,
    )
    shortfall = amount_micros - taken
    if shortfall:
        account.suspended = True
        account.suspended_reason = (
            f"A card payment was {what}: {format_usd(amount_micros)} was taken back, but "
            f"only {format_usd(taken)} of credit was left, so {format_usd(shortfall)} is "
            "owed. Contact support to settle it."
        )[:500]
        account.save(update_fields=["suspended", "suspended_reason", "updated_at"])
        logger.warning(
            "billing: account %s suspended: %s %s short by %s µUSD",
            account.pk,
            what,
            reference,
            shortfall,
        )
    return entry


def _subscription_reverse(
    *, account: Account, key: str, amount_micros: int, what: str, reference: str
) -> LedgerEntry | None:
    """A refunded or disputed plan payment: the fee's reversal is recorded (no credit was
    bought, so none is taken) and the subscription ends at once: the account moves to
    the default plan, any scheduled change dropped. Once per refund or dispute id."""
    if LedgerEntry.objects.filter(idempotency_key=key).exists():
        return None
    entry = ledger_entry_append(
        account=account,
        kind=EntryKind.PAYMENT_REVERSAL,
        effect=EntryEffect.RECORD,
        amount_micros=amount_micros,
        reason=(
            f"Subscription payment {what} ({format_usd(amount_micros)}, Stripe {reference}); "
            "the subscription ended"
        ),
        idempotency_key=key,
    )
    target = cancel_target()
    account_change_plan(
        user=account.user,
        plan=target,
        acting_user=None,
        reason=f"subscription payment {what} ({reference})",
    )
    Account.objects.filter(pk=account.pk).update(
        pending_plan=None, subscription_ends_at=timezone.now()
    )
    logger.warning("billing: account %s subscription ended: payment %s", account.pk, what)
    return entry


# --- webhooks -----------------------------------------------------------------------


def stripe_event_process(*, event: WebhookEvent) -> str:
    """Apply one verified webhook event; returns what it did (for the log).

    A repeat of a processed event id does nothing. Raises ``StripeUnavailableError``
    when Stripe could not be asked (the endpoint answers 503 so Stripe retries).
    """
    if StripeEvent.objects.filter(event_id=event.id).exists():
        return "duplicate"
    gateway = get_gateway()
    try:
        if event.type.startswith("payment_intent."):
            intent = gateway.payment_intent_retrieve(event.object_id)
            outcome = "applied" if _intent_apply(intent=intent) else "not ours"
            return _event_record(event=event, outcome=outcome)
        if event.type == "charge.refunded":
            charge = gateway.charge_retrieve(event.object_id)
            intent = gateway.payment_intent_retrieve(charge.payment_intent_id)
            refunds = gateway.refunds_list(charge_id=charge.id)
            refunds = [refund for refund in refunds if refund.status == "succeeded"]
            return _reversals_apply(event=event, intent=intent, refunds=refunds)
        if event.type == "charge.dispute.created":
            # Disputes cannot be fetched from localstripe: the signed event's dispute id
            # and amount are used; its charge and PaymentIntent are read from Stripe.
            charge = gateway.charge_retrieve(str(event.data.get("charge", "")))
            intent = gateway.payment_intent_retrieve(charge.payment_intent_id)
            dispute = (event.object_id, int(event.data.get("amount", 0)))
            return _reversals_apply(event=event, intent=intent, dispute=dispute)
    except StripeUnavailableError:
        raise
    except StripeRequestError as exc:
        logger.warning("billing: event %s (%s) refers to nothing we can read", event.id, event.type)
        return _event_record(event=event, outcome=f"unreadable: {exc.code or exc.status}")
    return _event_record(event=event, outcome="ignored")


@transaction.atomic
def _event_record(*, event: WebhookEvent, outcome: str) -> str:
    StripeEvent.objects.get_or_create(
        event_id=event.id, defaults={"type": event.type[:100], "outcome": outcome[:200]}
    )
    return outcome


@transaction.atomic
def _reversals_apply(
    *,
    event: WebhookEvent,
    intent: PaymentIntentInfo,
    refunds: list[RefundInfo] | None = None,
    dispute: tuple[str, int] | None = None,
) -> str:
    payment = _intent_apply(intent=intent)  # credit first if that event has not come yet
    if payment is None:
        return _event_record(event=event, outcome="not ours")
    account = account_lock(user_id=payment.account_id)
    reverse = _subscription_reverse if payment.purpose in PLAN_PURPOSES else _reverse
    done = 0
    for refund in refunds or []:
        if reverse(
            account=account,
            key=f"reversal:refund:{refund.id}",
            amount_micros=refund.amount_cents * MICROS_PER_CENT,
            what="refunded",
            reference=refund.id,
        ):
            done += 1
    if dispute is not None:
        dispute_id, cents = dispute
        if reverse(
            account=account,
            key=f"reversal:dispute:{dispute_id}",
            amount_micros=cents * MICROS_PER_CENT,
            what="disputed",
            reference=dispute_id,
        ):
            done += 1
    return _event_record(event=event, outcome=f"reversed {done}")


# --- plan changes and renewals (docs/billing.md "Paying for a plan") ----------------


class PlanPriceChangedError(PaymentError):
    """The quote the user confirmed is no longer the price: nothing was charged."""

    code = "price_changed"
    status = 409

    def __init__(self, quote: PlanChangeQuote) -> None:
        super().__init__(
            f"The price changed to {format_usd(quote.charge_now_micros)} since you opened "
            "this page; nothing was charged. Check the new amount and pay again."
        )
        self.quote = quote


def subscription_purchase(
    *, user: User, plan: Plan, quoted_micros: int, request_key: str
) -> PaymentResult:
    """Pay by card for a change to ``plan`` that costs money now, once per ``request_key``.

    The quote is derived again here: when it is not ``quoted_micros`` (what the page
    showed) nothing is charged and ``PlanPriceChangedError`` carries the new quote. A
    success is fulfilled (``subscription_fulfil``), never credited.
    """
    if not payments_enabled():
        raise PaymentsUnavailableError("Card payments are not available.")
    existing = Payment.objects.filter(request_key=request_key, account_id=user.pk).first()
    if existing is not None and existing.plan_id == plan.pk:
        return PaymentResult(payment=existing)  # a second submit of the same click
    account = Account.objects.select_related("plan").get(pk=user.pk)
    quote = plan_change_quote(account=account, plan=plan, now=timezone.now())
    if not quote.charge_now_micros:
        raise PlanChangeError("This change costs nothing now.", code="no_payment_needed")
    if quote.charge_now_micros != quoted_micros:
        raise PlanPriceChangedError(quote)
    return _card_charge(
        user=user,
        amount_micros=quote.charge_now_micros,
        request_key=request_key,
        purpose=PaymentPurpose.SUBSCRIPTION,
        plan=plan,
    )


def _renewal_key(account_id: int, period_end: datetime) -> str:
    return f"renewal:{account_id}:{period_end.timestamp():.6f}"


def _renewal_candidates(*, now: datetime) -> QuerySet[Account]:
    lead = timedelta(seconds=settings.BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS)
    return Account.objects.filter(
        pending_plan__isnull=True,
        suspended=False,
        subscription_ends_at__gt=now,
        subscription_ends_at__lte=now + lead,
        plan__subscription_fee_micros__gt=0,
        stripe_customer__payment_method_id__gt="",
    ).select_related("plan", "user")


def _renewal_wanted(account: Account) -> bool:
    return (
        plan_policy(account.plan).has_subscription
        and not Payment.objects.filter(
            account=account,
            purpose=PaymentPurpose.RENEWAL,
            renews_period_end=account.subscription_ends_at,
        ).exists()
    )


def renewals_due(*, now: datetime) -> list[int]:
    """Accounts whose subscription ends within ``BILLING_SUBSCRIPTION_RENEW_LEAD_SECONDS``
    and renews: no scheduled change or cancel, not suspended, a saved card, no renewal
    attempted for this period yet."""
    candidates = _renewal_candidates(now=now).order_by("subscription_ends_at")[:1000]
    return [account.pk for account in candidates if _renewal_wanted(account)]


def subscription_renewal_run(*, account_id: int, now: datetime) -> Payment | None:
    """Charge the plan fee off-session for the period after the current one, once.

    "Once per period" is the ``Payment`` for ``renewal:<account>:<period end>`` (its
    ``request_key``, and the constraint ``billing_payment_one_renewal_per_period``):
    a concurrent run finds that row and sends nothing. A success renews the period
    (``subscription_fulfil``); a refusal leaves the subscription to end, the reason on
    the billing and plans pages (``renewal_failure``).
    """
    if not payments_enabled():
        return None
    account = _renewal_candidates(now=now).filter(pk=account_id).first()
    if account is None or not _renewal_wanted(account):
        return None
    assert account.subscription_ends_at is not None
    try:
        result = _card_charge(
            user=account.user,
            amount_micros=card_amount(account.plan.subscription_fee_micros),
            request_key=_renewal_key(account.pk, account.subscription_ends_at),
            purpose=PaymentPurpose.RENEWAL,
            plan=account.plan,
            renews_period_end=account.subscription_ends_at,
        )
    except PaymentsUnavailableError:
        raise
    except PaymentError as exc:
        logger.info("billing: renewal of account %s refused: %s", account_id, exc.code)
        return Payment.objects.filter(
            request_key=_renewal_key(account.pk, account.subscription_ends_at)
        ).first()
    return result.payment


#: What the billing and plans pages say after a refused renewal.
RENEWAL_DECLINED = "Your card was declined; renew to keep generating."


def renewal_failure(*, account: Account) -> Payment | None:
    """The refused renewal of ``account``'s current (or just ended) period, if any."""
    if account.subscription_ends_at is None or not plan_policy(account.plan).has_subscription:
        return None
    return Payment.objects.filter(
        account=account,
        purpose=PaymentPurpose.RENEWAL,
        renews_period_end=account.subscription_ends_at,
        status=PaymentStatus.FAILED,
    ).first()


# --- auto top-up ----------------------------------------------------------------------


@transaction.atomic
def auto_topup_configure(
    *, user: User, enabled: bool, threshold_micros: int, amount_micros: int
) -> StripeCustomer:
    """Turn auto top-up on (saved card required) or off, with its threshold and amount."""
    if enabled:
        amount_validate(amount_micros)
        if threshold_micros < 0 or threshold_micros % MICROS_PER_CENT:
            raise PaymentError("Enter the threshold in whole cents.", code="invalid_amount")
    account_lock(user_id=user.pk)
    customer = StripeCustomer.objects.filter(account_id=user.pk).first()
    if customer is None or not customer.has_card:
        raise PaymentError("Add a card first.", code="no_card")
    customer.auto_topup_enabled = enabled
    if enabled:
        customer.auto_topup_threshold_micros = threshold_micros
        customer.auto_topup_amount_micros = amount_micros
        customer.auto_topup_error = ""
    customer.save()
    return customer


def auto_topup_wanted(*, account: Account) -> bool:
    """Whether ``account`` (locked, totals current) is below its auto top-up threshold."""
    customer = StripeCustomer.objects.filter(account=account, auto_topup_enabled=True).first()
    return (
        customer is not None
        and customer.has_card
        and account.available_micros < customer.auto_topup_threshold_micros
    )


def auto_topup_enqueue(*, account: Account) -> None:
    """After the caller's commit, check ``account`` for an auto top-up (id only)."""
    if payments_enabled() and auto_topup_wanted(account=account):
        account_id = account.pk
        transaction.on_commit(lambda: tasks.auto_topup_task.delay(account_id))


def auto_topup_run(*, account_id: int) -> Payment | None:
    """Top the account up once if it is still below its threshold and none is in flight.

    "Never more than one in flight" is the partial unique constraint
    ``billing_payment_one_auto_topup_in_flight``: a concurrent run's insert fails.
    """
    if not payments_enabled():
        return None
    account = Account.objects.filter(pk=account_id).select_related("user").first()
    if account is None or account.suspended or not auto_topup_wanted(account=account):
        return None
    if Payment.objects.filter(
        account=account, purpose=PaymentPurpose.AUTO_TOPUP, status__in=PAYMENT_IN_FLIGHT
    ).exists():
        return None
    customer = StripeCustomer.objects.get(account=account)
    try:
        result = credit_purchase(
            user=account.user,
            amount_micros=customer.auto_topup_amount_micros,
            request_key=f"auto:{uuid.uuid4().hex}",
            purpose=PaymentPurpose.AUTO_TOPUP,
        )
    except PaymentsUnavailableError:
        raise
    except PaymentError as exc:
        logger.info("billing: auto top-up of account %s refused: %s", account_id, exc.code)
        return None
    return result.payment
