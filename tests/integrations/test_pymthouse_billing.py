"""The billing client against the sandbox over real HTTP: typed results, exact micros,
and one error class per refusal the real server gives (transcript T#n)."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import pytest
import requests

from integrations.pymthouse import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseBillingConflictError,
    PymthouseBillingUnavailableError,
    PymthouseClient,
    PymthouseConnectNotReadyError,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    PymthouseOwnerWalletError,
    PymthousePaymentMethodRequiredError,
    PymthouseProtocolError,
    PymthouseUnavailableError,
)
from integrations.pymthouse.billing_types import BillingState, Wallet
from integrations.pymthouse.config import PymthouseConfig
from integrations.pymthouse.money import MoneyParseError, format_usd_cents, parse_usd_dollars
from integrations.pymthouse.types import SecretToken
from tests.integrations.conftest import app_path, calls
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

USER = "py-billing-001"
SUCCESS = "https://builder.example/billing/ok"
CANCEL = "https://builder.example/billing"
TOP_UP = app_path("/billing/wallet/top-up")
WALLET = app_path("/billing/wallet")


def _merchant(sandbox: SandboxControl, **extra: object) -> None:
    settings = {"billingMode": "merchant", "billingEnabled": True, "connectReady": True,
                "creditDelaySeconds": 0, **extra}  # fmt: skip
    sandbox.set_billing(**settings)


def _pay(url: str) -> requests.Response:
    with requests.Session() as browser:
        browser.trust_env = False
        return browser.post(url, allow_redirects=False)


# --- money grammar -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0", 0), ("25.00", 25_000_000), ("0.000001", 1), ("10000", 10_000_000_000), (5, 5_000_000)],
)
def test_dollar_strings_parse_to_exact_micros(text: object, micros: int) -> None:
    assert parse_usd_dollars(text) == micros


@pytest.mark.parametrize("text", ["1.0000001", "-1", "1e3", " 1", "1.", ".5", 1.5, True, None])
def test_dollar_strings_outside_the_grammar_are_refused(text: object) -> None:
    with pytest.raises(MoneyParseError):
        parse_usd_dollars(text)


def test_whole_cents_format_and_refuse_fractions() -> None:
    assert format_usd_cents(25_000_000) == "25.00"
    assert format_usd_cents(1_050_000) == "1.05"
    with pytest.raises(ValueError, match="whole cents"):
        format_usd_cents(1_000_001)


# --- billing off: the local server ----------------------------------------------------------


def test_billing_off_wallet_and_state_parse(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    wallet = client.wallet_get(external_user_id=USER)
    assert isinstance(wallet, Wallet)
    assert (wallet.balance, wallet.auto_top_up, wallet.payment_method.has_default) == (
        None, None, None,
    )  # fmt: skip  # T#14
    state = wallet.billing_state
    assert (state.status, state.can_spend, state.reason) == (
        "blocked",
        False,
        "billing_unavailable",
    )
    assert state.subject.billing_mode == "owner_rollup"
    assert state.funding.overage.ceiling.usd_micros == 2_000_000
    assert state.collection.lead_threshold.usd_micros == 1_000_000
    assert [plan.plan_name for plan in wallet.pay_per_use_plans] == ["__pymthouse_starter__"]
    assert isinstance(client.billing_state_get(), BillingState)


def test_billing_off_refusals_map_to_distinct_classes(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    with pytest.raises(PymthouseBillingUnavailableError) as unavailable:
        client.top_up_create(amount_usd_micros=25_000_000, external_user_id=USER,
                             success_url=SUCCESS, cancel_url=CANCEL)  # fmt: skip
    assert unavailable.value.status == 503
    assert unavailable.value.description == "Billing is not available right now"  # T#21
    assert isinstance(unavailable.value, PymthouseUnavailableError)
    assert len(calls(sandbox, "POST", TOP_UP)) == 1  # a POST is never retried

    with pytest.raises(PymthouseOwnerWalletError) as owner:
        client.checkout_create(plan_id="x", external_user_id=USER)
    assert (owner.value.status, owner.value.code) == (400, "owner_wallet_not_app_user")  # T#38
    with pytest.raises(PymthouseOwnerWalletError) as auto:
        client.wallet_auto_topup_set(external_user_id=USER, enabled=True)
    assert (auto.value.status, auto.value.code) == (409, "auto_topup_merchant_only")  # T#15
    with pytest.raises(PymthouseBillingUnavailableError) as cancel:
        client.subscription_cancel(external_user_id=USER)
    assert cancel.value.code == "openmeter_unavailable"  # T#48
    with pytest.raises(PymthouseBillingUnavailableError):
        client.subscription_resume(external_user_id=USER)  # T#50
    with pytest.raises(PymthouseBillingUnavailableError):
        client.invoice_hosted_url(external_user_id=USER, invoice_id="in_probe")  # T#52
    with pytest.raises(PymthouseBillingUnavailableError):
        client.payment_method_setup(external_user_id=None, success_url=SUCCESS,
                                    cancel_url=CANCEL)  # fmt: skip  # T#25
    page = client.invoices_list(external_user_id=USER, page=1, page_size=10)
    assert (page.items, page.page, page.page_size, page.total_count) == ((), 1, 10, 0)
    assert client.payment_methods_list(external_user_id=USER) == ()
    subscription = client.subscription_get(external_user_id=USER)
    assert (subscription.subscription, subscription.live_plan) == (None, None)  # T#40


def test_bad_credentials_are_an_auth_error(sandbox: SandboxControl) -> None:
    config = PymthouseConfig.from_settings()
    wrong = PymthouseClient(
        dataclasses.replace(config, m2m_client_secret=SecretToken("pmth_cs_wrong"))
    )
    try:
        for call in (
            lambda: wrong.wallet_get(),
            lambda: wrong.plans_list(),
            lambda: wrong.subscription_get(external_user_id=USER),
        ):
            with pytest.raises(PymthouseAuthError) as error:
                call()
            assert (error.value.status, error.value.description) == (404, "Not found")
    finally:
        wrong.close()


def test_invalid_arguments_send_nothing(client: PymthouseClient, sandbox: SandboxControl) -> None:
    for amount, message in ((990_000, "between"), (1_000_001, "whole cents"),
                            (10_000_010_000, "between")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            client.top_up_create(amount_usd_micros=amount, external_user_id=USER,
                                 success_url=SUCCESS, cancel_url=CANCEL)  # fmt: skip
    with pytest.raises(ValueError, match="owner:"):
        client.wallet_get(external_user_id="owner:someone")
    with pytest.raises(ValueError, match="timing"):
        client.subscription_change(external_user_id=USER, plan_id="p", timing="tomorrow")  # type: ignore[arg-type]
    assert sandbox.requests(TOP_UP) == []
    assert sandbox.requests(app_path(f"/users/{USER}/subscription/change")) == []


# --- merchant ------------------------------------------------------------------------------


def test_merchant_connect_not_ready_and_card_required(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.set_billing(billingMode="merchant")
    with pytest.raises(PymthouseConnectNotReadyError) as connect:
        client.top_up_create(amount_usd_micros=10_000_000, external_user_id=USER,
                             success_url=SUCCESS, cancel_url=CANCEL)  # fmt: skip
    assert connect.value.status == 409
    assert connect.value.description == "Merchant Stripe Connect is not ready to accept payments"
    assert isinstance(connect.value, PymthouseBillingConflictError)
    with pytest.raises(PymthousePaymentMethodRequiredError) as card:
        client.wallet_auto_topup_set(external_user_id=USER, enabled=True,
                                     amount_usd_micros=20_000_000)  # fmt: skip
    assert (card.value.status, card.value.code) == (409, "payment_method_required")  # T#99
    off = client.wallet_auto_topup_set(external_user_id=USER, enabled=False)
    assert (off.auto_top_up.enabled, off.auto_top_up.amount_usd_micros) == (False, 10_000_000)
    with pytest.raises(PymthouseBadRequestError) as required:
        client.wallet_get()
    assert required.value.description == "externalUserId is required when billingMode is merchant"
    assert sandbox.billing()["sessions"] == []


def test_top_up_round_trip_credits_once(client: PymthouseClient, sandbox: SandboxControl) -> None:
    _merchant(sandbox, creditDelaySeconds=0.3)
    checkout = client.top_up_create(amount_usd_micros=25_000_000, external_user_id=USER,
                                    success_url=SUCCESS, cancel_url=CANCEL)  # fmt: skip
    assert checkout.amount_usd_micros == 25_000_000
    assert checkout.session_id is not None
    assert checkout.session_id.startswith("cs_")
    assert client.wallet_get(external_user_id=USER).balance is not None
    paid = _pay(checkout.checkout_url)
    assert (paid.status_code, paid.headers["location"]) == (303, SUCCESS)
    _pay(checkout.checkout_url)  # paying twice
    deadline = time.monotonic() + 5
    wallet = client.wallet_get(external_user_id=USER)
    while wallet.balance is not None and wallet.balance.usd_micros == 0:
        assert time.monotonic() < deadline, "the credit never landed"
        time.sleep(0.1)
        wallet = client.wallet_get(external_user_id=USER)
    time.sleep(0.5)
    wallet = client.wallet_get(external_user_id=USER)
    assert wallet.balance is not None
    assert wallet.balance.usd_micros == 25_000_000
    assert wallet.balance.lifetime_granted_usd_micros == 25_000_000
    state = client.billing_state_get(external_user_id=USER)
    assert (state.prepaid_usd_micros, state.spendable_usd_micros) == (25_000_000, 30_000_000)
    assert (state.status, state.can_spend, state.subject.type) == ("active", True, "end_user")
    (invoice,) = client.invoices_list(external_user_id=USER).items
    assert (invoice.total_usd_micros, invoice.invoice_type) == (25_000_000, "payment")
    assert sandbox.billing_customer(USER)["grantKeys"] == [f"topup:{checkout.session_id}"]


def test_plans_checkout_subscription_cycle(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    _merchant(sandbox)
    network, starter = client.plans_list()
    assert (network.is_network_default, network.purchasable) == (True, False)
    assert (starter.type, starter.price_usd_micros, starter.included_usd_micros) == (
        "usage", 0, 5_000_000,
    )  # fmt: skip
    pro_id = sandbox.add_plan(
        "Pro",
        type="subscription",
        priceUsdMicros=20_000_000,
        includedUsdMicros=25_000_000,
        overageRateUsd="0.0000015",
    )["id"]
    pro = next(plan for plan in client.plans_list() if plan.id == pro_id)
    assert (pro.price_usd_micros, pro.overage_rate_usd) == (20_000_000, Decimal("0.0000015"))

    setup = client.checkout_create(plan_id=pro_id, external_user_id=USER, success_url=SUCCESS)
    assert setup.needs_card
    assert client.subscription_get(external_user_id=USER).live_plan.id == starter.id  # type: ignore[union-attr]
    assert _pay(setup.checkout_url).status_code == 303
    (card,) = client.payment_methods_list(external_user_id=USER)
    assert (card.is_default, card.last4) == (True, "4242")
    assert client.wallet_payment_methods_list(external_user_id=USER) == (card,)

    subscribed = client.checkout_create(plan_id=pro_id, external_user_id=USER,
                                        success_url=SUCCESS)  # fmt: skip
    assert (subscribed.needs_card, subscribed.checkout_url) == (False, SUCCESS)
    current = client.subscription_get(external_user_id=USER)
    assert current.subscription is not None
    assert (current.subscription.plan_id, current.subscription.id) == (
        pro_id, subscribed.subscription_id,
    )  # fmt: skip
    (fee,) = client.invoices_list(external_user_id=USER).items
    assert (fee.total_usd_micros, fee.status) == (20_000_000, "paid")
    links = client.invoice_hosted_url(external_user_id=USER, invoice_id=fee.id)
    assert links.hosted_invoice_url is not None
    with pytest.raises(PymthouseAuthError):  # an unknown invoice is the bare 404 upstream
        client.invoice_hosted_url(external_user_id=USER, invoice_id="in_nope")

    cancel = client.subscription_cancel(external_user_id=USER)
    assert (cancel.plan_id, cancel.scheduled_plan_key) == (pro_id, "__pymthouse_starter__")
    assert client.subscription_get(external_user_id=USER).pending_cancel is not None
    resumed = client.subscription_resume(external_user_id=USER)
    assert (resumed.resumed, resumed.plan_id) == (True, pro_id)
    with pytest.raises(PymthouseNotFoundError) as nothing:
        client.subscription_resume(external_user_id=USER)
    assert nothing.value.code == "nothing_to_resume"
    change = client.subscription_change(external_user_id=USER, plan_id=starter.id)
    assert (change.plan_id, change.timing, change.checkout_url) == (
        starter.id, "next_billing_cycle", None,
    )  # fmt: skip
    with pytest.raises(PymthouseUnavailableError) as failed:
        client.subscription_change(external_user_id=USER, plan_id="nope")
    assert failed.value.status == 502  # pymthouse maps an unknown plan to 502 (T#114)


def test_subscription_change_without_a_card_returns_the_setup_url(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    _merchant(sandbox)
    usage_id = sandbox.add_plan("Metered", type="usage")["id"]
    change = client.subscription_change(external_user_id=USER, plan_id=usage_id)
    assert change.checkout_url is not None
    assert change.timing == "immediate"
    assert change.plan_id != usage_id  # still the current plan
    sandbox.set_billing(connectReady=False)
    with pytest.raises(PymthouseConnectNotReadyError) as onboarding:
        client.subscription_change(external_user_id=USER, plan_id=usage_id)
    assert onboarding.value.status == 403


def test_mint_refusal_is_insufficient_funds(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    _merchant(sandbox)
    sandbox.billing_customer(USER, includedConsumedUsdMicros=5_000_000)
    with pytest.raises(PymthouseInsufficientFundsError) as refused:
        client.mint_signer_session(external_user_id=USER)
    assert (refused.value.status, refused.value.reason) == (402, "no_payment_method")
    assert sandbox.events() == []


def test_a_malformed_amount_is_a_protocol_error(
    client: PymthouseClient, sandbox: SandboxControl
) -> None:
    sandbox.add_fault("GET", app_path("/plans"), status=200, times=1, body={
        "apiVersion": 1,
        "plans": [{"id": "p", "clientId": "c", "name": "n", "type": "usage",
                   "priceAmount": 1.5, "priceCurrency": "USD", "status": "active"}],
    })  # fmt: skip
    with pytest.raises(PymthouseProtocolError, match="priceAmount"):
        client.plans_list()
    sandbox.add_fault("GET", WALLET, status=502, times=3, body={"error": "Bad gateway"})
    with pytest.raises(PymthouseUnavailableError):
        client.wallet_get()
    assert len(calls(sandbox, "GET", WALLET)) == 3  # GET retried (max_retries=2)
