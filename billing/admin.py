"""Staff interface over billing.services.

Balances are never edited in a form: staff grant or deduct credit, change plans and
suspend accounts through the services (with a mandatory reason and their own user as
the actor), each also written to Django's admin log. Ledger entries, holds and
rejections are read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.models import User
from billing.errors import BillingError
from billing.forms import CreditAdjustForm, PlanChangeForm, SuspendForm
from billing.lock_objects import account_lock
from billing.models import (
    Account,
    Hold,
    LedgerEntry,
    LedgerRejection,
    MerchantWallet,
    ObservedPrice,
    PendingTopUp,
    Plan,
    PlanAssignment,
    PromotionalCredit,
)
from billing.money import format_eth, format_usd_micros
from billing.selectors import account_credit_split, entry_display
from billing.services import (
    account_change_plan,
    account_set_suspended,
    credit_deduct,
    promotion_grant,
)
from billing.services.pricing import price_jump_adopt
from integrations.pymthouse import PymthouseError, get_client


def _entry_tag(entry: LedgerEntry) -> str:
    return f"[ledger entry {entry.pk}]"


def _wei(value: int | None) -> str:
    return (
        ""
        if value is None
        else format_html('{} <span class="quiet">({} wei)</span>', format_eth(value), value)
    )


def _usd(value: int | None) -> str:
    """Staff see the exact amount: every micro."""
    return "" if value is None else format_usd_micros(value)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows written only by services (ledger, holds, the usage mirror): never by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = (
        "name",
        "slug",
        "plan_type",
        "monthly_generation_allowance",
        "monthly_generation_cap",
        "multiplier",
        "flat_price",
        "is_active",
    )
    list_filter = ("plan_type", "is_active")
    readonly_fields = ("created_at",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # accounts and history point at plans; retire with is_active

    @admin.display(description="Multiplier")
    def multiplier(self, obj: Plan) -> str:
        return obj.multiplier_text

    @admin.display(description="Flat price")
    def flat_price(self, obj: Plan) -> str:
        return _usd(obj.flat_price_micros)


class PlanHistoryInline(admin.TabularInline):  # type: ignore[type-arg]
    model = PlanAssignment
    extra = 0
    fields = ("plan", "started_at", "ended_at", "actor", "reason")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin[Account]):
    list_display = (
        "user",
        "plan",
        "balance",
        "held",
        "available",
        "suspended",
        "provisioning",
        "updated_at",
    )
    list_filter = ("plan", "suspended", "user__provisioning_status")
    search_fields = ("user__email", "user__external_user_id")
    list_select_related = ("user", "plan")
    inlines = (PlanHistoryInline,)
    fields = (
        "user",
        "plan",
        "balance",
        "promotional",
        "purchased",
        "held",
        "available",
        "suspended",
        "suspended_reason",
        "subscription_starts_at",
        "subscription_ends_at",
        "provisioning",
        "staff_actions",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # accounts open with their user

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # only through the actions below (services, with a reason)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Balance")
    def balance(self, obj: Account) -> str:
        return _usd(obj.balance_micros)

    @admin.display(description="Promotional credit (spent first)")
    def promotional(self, obj: Account) -> str:
        split = account_credit_split(account=obj)
        if not split.lots:
            return _usd(0)
        return "; ".join(
            f"{_usd(lot.remaining_micros)} "
            + (f"expires {lot.expires_at:%Y-%m-%d %H:%M} UTC" if lot.expires_at else "no expiry")
            for lot in split.lots
        )

    @admin.display(description="Purchased credit")
    def purchased(self, obj: Account) -> str:
        return _usd(account_credit_split(account=obj).purchased_micros)

    @admin.display(description="Held")
    def held(self, obj: Account) -> str:
        return _usd(obj.held_micros)

    @admin.display(description="Available")
    def available(self, obj: Account) -> str:
        return _usd(obj.available_micros)

    @admin.display(description="pymthouse provisioning", ordering="user__provisioning_status")
    def provisioning(self, obj: Account) -> str:
        return obj.user.get_provisioning_status_display()

    @admin.display(description="Actions")
    def staff_actions(self, obj: Account) -> str:
        links = [
            ("Grant or deduct credit", "admin:billing_account_credit"),
            ("Change plan", "admin:billing_account_plan"),
            ("Suspend or reinstate", "admin:billing_account_suspend"),
            ("pymthouse's view of this user", "admin:billing_account_pymthouse"),
            ("Ledger", None),
        ]
        html = []
        for label, name in links:
            ledger = reverse("admin:billing_ledgerentry_changelist")
            url = reverse(name, args=[obj.pk]) if name else f"{ledger}?account__pk__exact={obj.pk}"
            html.append(format_html('<a class="button" href="{}">{}</a>', url, label))
        return format_html(" ".join(["{}"] * len(html)), *html)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/credit/", view(self.credit_view), name="billing_account_credit"),
            path("<int:pk>/plan/", view(self.plan_view), name="billing_account_plan"),
            path("<int:pk>/suspend/", view(self.suspend_view), name="billing_account_suspend"),
            path(
                "<int:pk>/pymthouse/", view(self.pymthouse_view), name="billing_account_pymthouse"
            ),
            *super().get_urls(),
        ]

    # --- staff actions --------------------------------------------------------------

    def _account(self, request: HttpRequest, pk: int) -> Account:
        account = get_object_or_404(Account.objects.select_related("user", "plan"), pk=pk)
        if not self.has_view_permission(request, account):
            raise PermissionDenied
        return account

    def _staff(self, request: HttpRequest) -> User:
        user = request.user
        assert isinstance(user, User)  # admin_view guarantees an active staff user
        return user

    def _require_manage(self, request: HttpRequest) -> None:
        if not request.user.has_perm("billing.change_account"):
            raise PermissionDenied

    def _render(
        self, request: HttpRequest, account: Account, *, title: str, form: Any, extra: Any = None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": account,
            "account": account,
            "title": title,
            "form": form,
            "extra": extra,
            "balance": format_usd_micros(account.balance_micros),
            "available": format_usd_micros(account.available_micros),
        }
        return TemplateResponse(request, "admin/billing/account/action_form.html", context)

    def _done(
        self, request: HttpRequest, account: Account, message: str, *, log: bool = True
    ) -> HttpResponse:
        if log:
            self.log_change(request, account, message)
        self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:billing_account_change", args=[account.pk]))

    @staticmethod
    def _entry_logged(account: Account, entry: LedgerEntry) -> bool:
        """Whether the account's history already tells of ``entry`` (a replayed submit)."""
        return LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Account),
            object_id=str(account.pk),
            change_message__endswith=_entry_tag(entry),
        ).exists()

    def credit_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        self._require_manage(request)
        account = self._account(request, pk)
        form = CreditAdjustForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            key = f"admin:{data['idempotency_key']}"
            try:
                if data["operation"] == "grant":
                    entry = promotion_grant(
                        user=account.user,
                        amount_micros=data["amount_micros"],
                        reason=data["reason"],
                        acting_user=self._staff(request),
                        idempotency_key=key,
                        expires_at=data["expires_at"],
                    )
                else:
                    entry = credit_deduct(
                        user=account.user,
                        amount_micros=data["amount_micros"],
                        reason=data["reason"],
                        acting_user=self._staff(request),
                        idempotency_key=key,
                    )
            except BillingError as exc:
                form.add_error(None, exc.message)
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                if data["operation"] == "grant":
                    expires = data["expires_at"]
                    verb = "Granted promotional credit" + (
                        f" (expires {expires:%Y-%m-%d %H:%M} UTC)" if expires else " (no expiry)"
                    )
                else:
                    verb = "Deducted"
                message = (
                    f"{verb} {format_usd_micros(entry.amount_micros)}: "
                    f"{entry.reason} {_entry_tag(entry)}"
                )
                # The history follows the ledger: a replayed submit (same key, same
                # entry) is told so and not written again. The account lock serialises
                # concurrent replays between the check and the write.
                with transaction.atomic():
                    account_lock(user_id=account.pk)
                    if self._entry_logged(account, entry):
                        return self._done(
                            request, account, f"Already recorded: {message}", log=False
                        )
                    return self._done(request, account, message)
        return self._render(request, account, title="Grant or deduct credit", form=form)

    def plan_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        self._require_manage(request)
        account = self._account(request, pk)
        form = PlanChangeForm(
            request.POST or None,
            initial={
                "plan": account.plan_id,
                "subscription_starts_at": account.subscription_starts_at,
                "subscription_ends_at": account.subscription_ends_at,
            },
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                account_change_plan(
                    user=account.user,
                    plan=data["plan"],
                    acting_user=self._staff(request),
                    reason=data["reason"],
                    subscription_starts_at=data["subscription_starts_at"],
                    subscription_ends_at=data["subscription_ends_at"],
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                return self._done(
                    request, account, f"Plan set to {data['plan'].name}: {data['reason']}"
                )
        return self._render(request, account, title="Change plan", form=form)

    def suspend_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        self._require_manage(request)
        account = self._account(request, pk)
        form = SuspendForm(request.POST or None, initial={"suspended": account.suspended})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            account_set_suspended(
                user=account.user,
                suspended=data["suspended"],
                reason=data["reason"],
                acting_user=self._staff(request),
            )
            state = "Suspended" if data["suspended"] else "Reinstated"
            return self._done(request, account, f"{state}: {data['reason'] or '-'}")
        return self._render(request, account, title="Suspend or reinstate", form=form)

    def pymthouse_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """pymthouse's own usage balance for this user, fetched now; errors shown, not raised."""
        account = self._account(request, pk)
        extra: dict[str, Any] = {"external_user_id": account.user.external_user_id}
        try:
            balance = get_client().balance(external_user_id=account.user.external_user_id)
        except PymthouseError as exc:
            extra["error"] = f"{type(exc).__name__}: {exc}"
        else:
            extra["balance"] = balance
        return self._render(
            request, account, title="pymthouse's view of this user", form=None, extra=extra
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "account",
        "kind",
        "credit_type",
        "amount",
        "balance_after",
        "actor",
        "reason",
    )
    list_filter = ("kind", "effect")
    search_fields = ("account__user__email", "idempotency_key", "usage_ref", "reason")
    list_select_related = ("account__user", "actor", "promotional_credit")
    date_hierarchy = "created_at"
    readonly_fields = (
        "account",
        "kind",
        "effect",
        "credit_type",
        "amount",
        "balance_after",
        "held_after",
        "reason",
        "actor",
        "idempotency_key",
        "generation_id",
        "usage_ref",
        "network_fee",
        "eth_usd_rate",
        "rate_source",
        "rate_at",
        "corrects",
        "created_at",
    )
    fields = readonly_fields

    @admin.display(description="Credit")
    def credit_type(self, obj: LedgerEntry) -> str:
        return entry_display(obj).credit_type

    @admin.display(description="Network fee")
    def network_fee(self, obj: LedgerEntry) -> str:
        return _wei(obj.network_fee_wei)

    @admin.display(description="Amount")
    def amount(self, obj: LedgerEntry) -> str:
        return _usd(obj.amount_micros)

    @admin.display(description="Balance after")
    def balance_after(self, obj: LedgerEntry) -> str:
        return _usd(obj.balance_after_micros)

    @admin.display(description="Held after")
    def held_after(self, obj: LedgerEntry) -> str:
        return _usd(obj.held_after_micros)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = (
        "generation_id",
        "account",
        "amount",
        "status",
        "charged",
        "absorbed",
        "max_fee",
        "created_at",
        "resolved_at",
    )
    list_filter = ("status",)
    search_fields = ("generation_id", "account__user__email")

    @admin.display(description="Amount")
    def amount(self, obj: Hold) -> str:
        return _usd(obj.amount_micros)

    @admin.display(description="Charged")
    def charged(self, obj: Hold) -> str:
        return _usd(obj.charged_micros)

    @admin.display(description="Absorbed (operator)")
    def absorbed(self, obj: Hold) -> str:
        return _usd(obj.absorbed_micros) if obj.absorbed_micros else ""

    @admin.display(description="Network fee ceiling")
    def max_fee(self, obj: Hold) -> str:
        return _wei(obj.max_fee_wei)


@admin.register(PromotionalCredit)
class PromotionalCreditAdmin(ReadOnlyAdmin):
    """Lots of promotional credit: what each grant has left and when it expires."""

    list_display = ("id", "account", "amount", "remaining", "expires_at", "closed_at", "entry")
    list_filter = (("closed_at", admin.EmptyFieldListFilter),)
    search_fields = ("account__user__email",)
    list_select_related = ("account__user", "entry")
    raw_id_fields = ("account", "entry", "expiry_entry")

    @admin.display(description="Granted")
    def amount(self, obj: PromotionalCredit) -> str:
        return _usd(obj.amount_micros)

    @admin.display(description="Remaining")
    def remaining(self, obj: PromotionalCredit) -> str:
        return _usd(obj.remaining_micros)


@admin.register(LedgerRejection)
class LedgerRejectionAdmin(ReadOnlyAdmin):
    list_display = ("idempotency_key", "account", "kind", "amount", "reason", "created_at")

    @admin.display(description="Amount")
    def amount(self, obj: LedgerRejection) -> str:
        return _usd(obj.amount_micros)


@admin.register(ObservedPrice)
class ObservedPriceAdmin(ReadOnlyAdmin):
    """The runner prices holds are based on; a jump above ``BILLING_PRICE_JUMP_FACTOR`` is
    shown here and adopted only by the action."""

    list_display = (
        "model_id",
        "fee_per_payment",
        "units_per_payment",
        "observed_at",
        "jumped",
        "jumped_at",
    )
    actions = ("adopt_jumped_price",)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("billing.change_account"):
            actions.pop("adopt_jumped_price", None)
        return actions

    @admin.display(description="Adopted fee per payment")
    def fee_per_payment(self, obj: ObservedPrice) -> str:
        return _wei(obj.price_wei * obj.units_per_payment)

    @admin.display(description="Jumped to (not adopted)")
    def jumped(self, obj: ObservedPrice) -> str:
        if obj.jumped_price_wei is None or not obj.jumped_units_per_payment:
            return ""
        return _wei(obj.jumped_price_wei * obj.jumped_units_per_payment)

    @admin.action(description="Adopt the jumped price as the base of holds")
    def adopt_jumped_price(self, request: HttpRequest, queryset: Any) -> None:
        adopted = [row.model_id for row in queryset if price_jump_adopt(model_id=row.model_id)]
        self.message_user(request, f"Adopted the jumped price for {len(adopted)} model(s).")


@admin.register(MerchantWallet)
class MerchantWalletAdmin(ReadOnlyAdmin):
    """Merchant mode: each user's pymthouse wallet as last read, and the last refusal
    pymthouse gave (what staff must fix: docs/billing.md "Merchant mode")."""

    list_display = (
        "account",
        "upstream_balance",
        "granted",
        "consumed",
        "can_spend",
        "reason",
        "refreshed_at",
        "last_error",
    )
    list_filter = ("can_spend", "reason")
    search_fields = ("account__user__email",)
    raw_id_fields = ("account",)

    @admin.display(description="pymthouse balance")
    def upstream_balance(self, obj: MerchantWallet) -> str:
        return _usd(obj.upstream_balance_micros)

    @admin.display(description="Granted (lifetime)")
    def granted(self, obj: MerchantWallet) -> str:
        return _usd(obj.granted_micros)

    @admin.display(description="Consumed")
    def consumed(self, obj: MerchantWallet) -> str:
        return _usd(obj.consumed_micros)


@admin.register(PendingTopUp)
class PendingTopUpAdmin(ReadOnlyAdmin):
    list_display = ("session_id", "account", "amount", "status", "created_at", "resolved_at")
    list_filter = ("status",)
    search_fields = ("session_id", "account__user__email")
    raw_id_fields = ("account",)

    @admin.display(description="Amount")
    def amount(self, obj: PendingTopUp) -> str:
        return _usd(obj.amount_micros)
