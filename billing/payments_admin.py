"""Read-only staff views of card payments (imported by billing/admin.py).

Ids and statuses only: no client secret or key is stored to show. A payment's money is
its ``purchase`` / ``subscription_fee`` / ``payment_reversal`` ledger entries (Ledger
entries, in the admin).
"""

from __future__ import annotations

from django.contrib import admin

from billing.models import Payment, StripeCustomer, StripeEvent
from billing.money import format_usd_micros


class _ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(_ReadOnly):
    list_display = (
        "created_at",
        "account",
        "purpose",
        "plan",
        "amount",
        "status",
        "payment_intent_id",
    )
    list_filter = ("status", "purpose")
    search_fields = ("payment_intent_id", "account__user__email", "id")
    raw_id_fields = ("account",)
    list_select_related = ("account__user", "plan")

    @admin.display(description="amount (USD)")
    def amount(self, payment: Payment) -> str:
        return format_usd_micros(payment.amount_micros)


@admin.register(StripeCustomer)
class StripeCustomerAdmin(_ReadOnly):
    list_display = ("account", "customer_id", "card_brand", "card_last4", "auto_topup_enabled")
    search_fields = ("customer_id", "account__user__email")
    raw_id_fields = ("account",)


@admin.register(StripeEvent)
class StripeEventAdmin(_ReadOnly):
    list_display = ("processed_at", "event_id", "type", "outcome")
    list_filter = ("type",)
    search_fields = ("event_id",)
