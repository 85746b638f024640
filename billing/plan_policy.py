"""What each plan type does, in one place: one small policy per ``PlanType``.

A policy answers the questions admission, settlement and the pages ask of a plan:
whether images are counted against a monthly limit (and which limit), whether an image
may start now, whether it places a hold and is charged, and what it is charged for a
network fee. A new plan type is one more entry in ``POLICIES``; nothing else compares
``plan_type`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from django.conf import settings

from billing.errors import CreditRefusedError
from billing.models import Account, MerchantWallet, Plan, PlanType
from billing.money import fraction_ceil, wei_to_usd_micros_exact


def _refuse(message: str, code: str) -> CreditRefusedError:
    return CreditRefusedError(message, code=code)


@dataclass(frozen=True)
class PlanPolicy:
    """The behaviour shared by every plan type; subclasses override what differs."""

    #: Each image places a hold at admission and is charged from it (prepaid credit).
    charges: bool = False
    #: Images are counted against a monthly limit (``monthly_limit``).
    counts_images: bool = False
    #: The account's subscription period gates admission.
    has_subscription: bool = False

    def monthly_limit(self, plan: Plan) -> int | None:
        """The images allowed per calendar month (UTC), if this type counts any."""
        return None

    def refusal(
        self, *, account: Account, plan: Plan, images_this_month: int, now: datetime
    ) -> CreditRefusedError | None:
        """Why an image may not start now (counted limits, subscription), or ``None``.

        ``images_this_month`` includes the image being admitted. Credit is checked
        separately (``charges``), against the hold.
        """
        return None

    def charge(self, plan: Plan, *, fee_wei: int, usd_per_eth: Fraction) -> int:
        """USD micros the user is charged for a network fee of ``fee_wei`` converted at
        ``usd_per_eth`` (0 when this type does not charge per image)."""
        return 0

    def flat_price(self, plan: Plan) -> int | None:
        """The exact price of every image, when it does not depend on the fee."""
        return None


@dataclass(frozen=True)
class FreePolicy(PlanPolicy):
    counts_images: bool = True

    def monthly_limit(self, plan: Plan) -> int | None:
        return plan.monthly_generation_allowance or 0

    def refusal(
        self, *, account: Account, plan: Plan, images_this_month: int, now: datetime
    ) -> CreditRefusedError | None:
        allowance = self.monthly_limit(plan) or 0
        if images_this_month > allowance:
            return _refuse(
                f"You've used all {allowance} free images for this month. "
                "Upgrade your plan to keep generating.",
                "allowance_used",
            )
        return None


@dataclass(frozen=True)
class SubscriptionPolicy(PlanPolicy):
    counts_images: bool = True
    has_subscription: bool = True

    def monthly_limit(self, plan: Plan) -> int | None:
        return plan.monthly_generation_cap

    def refusal(
        self, *, account: Account, plan: Plan, images_this_month: int, now: datetime
    ) -> CreditRefusedError | None:
        starts, ends = account.subscription_starts_at, account.subscription_ends_at
        if starts is None or ends is None or not starts <= now < ends:
            return _refuse(
                "Your subscription isn't active. Renew it to keep generating.",
                "subscription_inactive",
            )
        cap = self.monthly_limit(plan)
        if cap is not None and images_this_month > cap:
            return _refuse(
                f"You've reached your plan's {cap} images for this month.", "monthly_cap_reached"
            )
        return None


@dataclass(frozen=True)
class UsagePolicy(PlanPolicy):
    charges: bool = True

    def charge(self, plan: Plan, *, fee_wei: int, usd_per_eth: Fraction) -> int:
        """The plan's flat price if it has one, else the fee in USD × its multiplier,
        rounded up to a whole micro once (exact ``Fraction`` arithmetic until then)."""
        if plan.flat_price_micros is not None:
            return plan.flat_price_micros
        exact = wei_to_usd_micros_exact(fee_wei, usd_per_eth)
        return fraction_ceil(
            exact * Fraction(plan.multiplier_numerator, plan.multiplier_denominator)
        )

    def flat_price(self, plan: Plan) -> int | None:
        return plan.flat_price_micros


#: Merchant mode: what pymthouse's ``billingState.reason`` means for the user
#: (pymthouse/pymthouse@5ee7cfc7 ``src/lib/billing/billing-state.ts`` ``resolvePosture``).
MERCHANT_BLOCKED_MESSAGES: dict[str, str] = {
    "no_payment_method": "You're out of credit. Add credit to keep generating.",
    "overage_not_available": (
        "You're out of credit and your plan doesn't allow spending past $0. Add credit or "
        "change plan to keep generating."
    ),
    "debt_ceiling_reached": (
        "You've reached your plan's limit for unbilled usage while it is being collected. "
        "Add credit, or wait for your invoice to be paid, to keep generating."
    ),
    "billing_unavailable": (
        "Billing is unavailable right now, so images can't be paid for. Please try again later."
    ),
}


@dataclass(frozen=True)
class MerchantPolicy(PlanPolicy):
    """``BILLING_MODE=merchant``, whatever the local plan: pymthouse's wallet is the
    balance and pymthouse charges the network fee, so no retail price applies (no
    multiplier, no flat price; the operator's margin is in its pymthouse plans). Each
    image still holds its ceiling locally, in USD at the current rate, so concurrent
    images cannot spend more than the mirrored balance between wallet reads; pymthouse's
    billing state (``canSpend``, ``reason``) refuses first."""

    charges: bool = True

    def refusal(
        self, *, account: Account, plan: Plan, images_this_month: int, now: datetime
    ) -> CreditRefusedError | None:
        wallet = MerchantWallet.objects.filter(account=account).first()
        if wallet is None or wallet.refreshed_at is None:
            return _refuse(
                "We couldn't check your balance with the payment service. Please try again "
                "in a moment.",
                "wallet_unknown",
            )
        if not wallet.can_spend:
            message = MERCHANT_BLOCKED_MESSAGES.get(
                wallet.reason,
                "Your balance can't be spent right now. Add credit to keep generating.",
            )
            return _refuse(message, wallet.reason or "cannot_spend")
        return None

    def charge(self, plan: Plan, *, fee_wei: int, usd_per_eth: Fraction) -> int:
        """The network fee in USD, rounded up to a whole micro (what pymthouse takes)."""
        return fraction_ceil(wei_to_usd_micros_exact(fee_wei, usd_per_eth))


MERCHANT_POLICY = MerchantPolicy()

POLICIES: dict[str, PlanPolicy] = {
    PlanType.FREE: FreePolicy(),
    PlanType.SUBSCRIPTION: SubscriptionPolicy(),
    PlanType.USAGE: UsagePolicy(),
}


def plan_policy(plan: Plan) -> PlanPolicy:
    """The policy of ``plan``'s type (every ``PlanType`` has one: a test checks it); in
    merchant mode, ``MerchantPolicy`` for every plan."""
    if settings.BILLING_MODE == "merchant":
        return MERCHANT_POLICY
    return POLICIES[plan.plan_type]
