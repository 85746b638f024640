"""The sandbox's end-user billing routes against the reference and its transcript (T#n).

Defaults are the real local server (owner_rollup, no OpenMeter/Stripe); merchant mode
and "billing on" are set through the control API.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from sandbox.config import ConfigError, load_settings
from tests.sandbox.helpers import (
    APP_ID,
    BASIC,
    M2M_ID,
    SDXL_RUNNER,
    challenge,
    paid_call,
    provision,
    sign_payment,
    signer_address,
    signer_session,
)
from tests.sandbox_server import SandboxControl, SandboxProcess, free_port

WEB_BASIC = (
    "web_b50c8e3d43c6d3641cae2e66",
    "pmth_cs_5f0c1b7e2a9d4c6b8e3f1a0d7c5b9e2f4a6c8d0b1e3f5a7c9d2b4f6e8a0c1d3e",
)
APP = f"/api/v1/apps/{APP_ID}"
USER = "billing-probe-m1"
OWNER_WALLET = {
    "error": "App retail subscription mutations cannot target the owner wallet; use Owner "
    "Paid billing APIs",
    "code": "owner_wallet_not_app_user",
}
SUCCESS = "https://builder.example/billing/ok"
CANCEL = "https://builder.example/billing"


def _money(micros: int, usd: str) -> dict[str, str]:
    return {"usdMicros": str(micros), "usd": usd, "currency": "USD"}


def _merchant(control: SandboxControl, **extra: Any) -> None:
    settings = {"billingMode": "merchant", "billingEnabled": True, "connectReady": True,
                "creditDelaySeconds": 0, **extra}  # fmt: skip
    control.set_billing(**settings)


def _top_up(http: requests.Session, base: str, amount: Any, **fields: Any) -> requests.Response:
    return http.post(
        f"{base}{APP}/billing/wallet/top-up", auth=BASIC, json={"amountUsd": amount, **fields}
    )


def _wallet(http: requests.Session, base: str, ext: str | None = USER) -> dict[str, Any]:
    params = {"externalUserId": ext} if ext else None
    response = http.get(f"{base}{APP}/billing/wallet", auth=BASIC, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- auth (§3) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [None, (M2M_ID, "pmth_cs_wrong"), (APP_ID, ""), WEB_BASIC],
    ids=["none", "wrong-secret", "app-id-no-secret", "web-sibling"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/billing/wallet"), ("GET", "/billing/state"), ("POST", "/billing/wallet/top-up")],
)
def test_m2m_strict_routes_answer_404_to_anything_but_m2m_basic(
    base: str, http: requests.Session, auth: Any, method: str, path: str
) -> None:
    response = http.request(method, f"{base}{APP}{path}", auth=auth, json={"amountUsd": "5.00"})
    assert (response.status_code, response.json()) == (404, {"error": "Not found"})  # T#3-T#6


def test_m2m_strict_refuses_a_bearer_and_app_client_routes_take_the_web_sibling(
    base: str, http: requests.Session
) -> None:
    token = http.post(
        f"{base}/api/v1/oidc/token",
        auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "users:read"},
    ).json()["access_token"]
    wallet = http.get(f"{base}{APP}/billing/wallet", headers={"Authorization": f"Bearer {token}"})
    assert (wallet.status_code, wallet.json()) == (404, {"error": "Not found"})  # T#7
    subscription = http.get(f"{base}{APP}/users/{USER}/subscription", auth=WEB_BASIC)
    assert subscription.status_code == 200  # T#8
    assert http.get(f"{base}{APP}/plans", auth=WEB_BASIC).status_code == 200  # T#87
    assert http.get(f"{base}{APP}/users/{USER}/subscription").status_code == 404  # T#9
    assert http.get(f"{base}/api/v1/apps/app_other/plans", auth=BASIC).status_code == 404


# --- billing off: the local server (T#10-T#60) --------------------------------------------


def test_billing_off_state_is_blocked_billing_unavailable(
    base: str, http: requests.Session
) -> None:
    owner = http.get(f"{base}{APP}/billing/state", auth=BASIC)
    assert owner.status_code == 200
    assert owner.headers["Cache-Control"] == "no-store"
    body = owner.json()
    body.pop("asOf")
    assert body["subject"] == {
        "type": "owner",
        "externalUserId": None,
        "billingMode": "owner_rollup",
    }
    assert (body["status"], body["canSpend"], body["reason"]) == (
        "blocked", False, "billing_unavailable",
    )  # fmt: skip
    funding = body["funding"]
    assert funding["spendable"] == _money(0, "0.00")
    assert funding["net"] is None
    assert funding["overage"] == {
        "eligible": False,
        "ceiling": _money(2_000_000, "2.00"),
        "unbilledDebt": None,
        "remaining": None,
        "utilizationBps": None,
        "debtSource": "unavailable",
    }  # T#11
    assert body["collection"]["leadThreshold"] == _money(1_000_000, "1.00")
    assert body["collection"]["minimumCharge"] == _money(500_000, "0.50")
    assert body["collection"]["paymentMethod"] == {"hasDefault": None, "brand": None, "last4": None}
    assert body["explain"]["headline"] == "Requests are paused"
    subject = http.get(f"{base}{APP}/billing/state", auth=BASIC, params={"externalUserId": USER})
    overage = subject.json()["funding"]["overage"]
    assert subject.json()["subject"]["type"] == "owner"  # T#12: the id only scopes debt
    assert overage["unbilledDebt"] == _money(0, "0.00")
    assert overage["remaining"] == _money(2_000_000, "2.00")
    assert overage["utilizationBps"] == 0
    assert subject.json()["funding"]["net"] == _money(0, "0.00")


def test_billing_off_wallet_top_up_and_plan_routes(base: str, http: requests.Session) -> None:
    wallet = _wallet(http, base, None)
    assert (wallet["balance"], wallet["autoTopUp"]) == (None, None)  # T#13
    assert wallet["paymentMethod"] == {"hasDefault": None}
    assert [plan["planName"] for plan in wallet["payPerUsePlans"]] == ["__pymthouse_starter__"]
    patch = http.patch(
        f"{base}{APP}/billing/wallet", auth=BASIC,
        json={"externalUserId": USER, "enabled": True, "amountUsd": "10.00"},
    )  # fmt: skip
    assert (patch.status_code, patch.json()) == (
        409,
        {"error": "Auto top-up is available for merchant end-users only",
         "code": "auto_topup_merchant_only"},
    )  # fmt: skip  # T#15
    top_up = _top_up(http, base, "25.00", externalUserId=USER, successUrl=SUCCESS)
    assert (top_up.status_code, top_up.json()) == (
        503, {"error": "Billing is not available right now"},
    )  # fmt: skip  # T#21
    assert _top_up(http, base, 5).status_code == 503  # T#22
    checkout = http.post(
        f"{base}{APP}/billing/checkout", auth=WEB_BASIC,
        json={"planId": "does-not-exist", "externalUserId": USER},
    )  # fmt: skip
    assert (checkout.status_code, checkout.json()) == (400, OWNER_WALLET)  # T#38, T#39
    change = http.post(f"{base}{APP}/users/{USER}/subscription/change", auth=BASIC,
                       json={"planId": "x"})  # fmt: skip
    assert (change.status_code, change.json()) == (400, OWNER_WALLET)  # T#45
    cancel = http.delete(f"{base}{APP}/users/{USER}/subscription", auth=BASIC,
                         json={"confirm": True})  # fmt: skip
    assert (cancel.status_code, cancel.json()) == (
        503, {"error": "OpenMeter is not configured", "code": "openmeter_unavailable"},
    )  # fmt: skip  # T#48: 503 before owner_wallet_not_app_user
    resume = http.delete(
        f"{base}{APP}/users/{USER}/subscription/pending-change", auth=BASIC, json={}
    )
    assert resume.json()["code"] == "confirm_required"  # T#49
    invoices = http.get(f"{base}{APP}/users/{USER}/invoices?page=1&pageSize=10", auth=BASIC)
    assert invoices.json() == {"items": [], "page": 1, "pageSize": 10, "totalCount": 0}  # T#51
    hosted = http.get(f"{base}{APP}/users/{USER}/invoices/in_probe/hosted-url", auth=BASIC)
    assert (hosted.status_code, hosted.json()) == (503, {"error": "Billing unavailable"})  # T#52
    methods = http.get(f"{base}{APP}/users/{USER}/payment-methods", auth=BASIC)
    assert methods.json() == {"paymentMethods": []}  # T#53
    setup = http.post(f"{base}{APP}/users/{USER}/payment-methods", auth=BASIC, json={})
    assert setup.status_code == 400  # T#54
    assert setup.json()["error"].startswith("OpenMeter is not configured (set OPENMETER_URL;")
    no_method = http.get(f"{base}{APP}/billing/wallet/top-up", auth=BASIC)
    assert (no_method.status_code, no_method.content) == (405, b"")  # T#126
    assert "allow" not in no_method.headers


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'amountUsd is required (e.g. "25.00")'),  # T#16
        ({"amountUsd": "0.50"}, "amountUsd must be between $1.00 and $10,000.00"),  # T#17
        (
            {"amountUsd": "1.005"},
            "amountUsd must be a positive dollar amount with up to 2 decimals",
        ),
        ({"amountUsd": "10000.01"}, "amountUsd must be between $1.00 and $10,000.00"),  # T#19
        ({"amountUsd": "-5"}, "amountUsd must be a positive dollar amount with up to 2 decimals"),
    ],
)
def test_top_up_amount_rules(
    control: SandboxControl, http: requests.Session, body: dict[str, Any], message: str
) -> None:
    _merchant(control)  # the amount is checked before anything else, in every mode
    response = http.post(f"{control.url}{APP}/billing/wallet/top-up", auth=BASIC, json=body)
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_top_up_malformed_json_reads_as_empty(base: str, http: requests.Session) -> None:
    response = http.post(
        f"{base}{APP}/billing/wallet/top-up", auth=BASIC, data=b"{not json",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert response.json() == {"error": 'amountUsd is required (e.g. "25.00")'}  # T#20


# --- merchant: top-up, the checkout page, the credit once ------------------------------


def test_merchant_requires_the_end_user_and_a_ready_connect_account(
    control: SandboxControl, http: requests.Session
) -> None:
    control.set_billing(billingMode="merchant")
    required = {"error": "externalUserId is required when billingMode is merchant"}
    for path in ("/billing/state", "/billing/wallet"):
        response = http.get(f"{control.url}{APP}{path}", auth=BASIC)
        assert (response.status_code, response.json()) == (400, required)  # T#93, T#95
    assert _top_up(http, control.url, "10.00").json() == required  # T#97
    not_ready = _top_up(http, control.url, "10.00", externalUserId=USER)
    assert (not_ready.status_code, not_ready.json()) == (
        409, {"error": "Merchant Stripe Connect is not ready to accept payments"},
    )  # fmt: skip  # T#98
    wallet = _wallet(http, control.url)
    assert wallet["autoTopUp"] == {"enabled": False, "amountUsd": None}  # T#96
    assert wallet["billingState"]["subject"]["type"] == "end_user"
    assert wallet["billingState"]["collection"]["collector"] == "settlement_connect"
    control.set_billing(connectReady=True)
    assert _top_up(http, control.url, "10.00", externalUserId=USER).status_code == 503
    assert control.billing()["sessions"] == []


def test_top_up_checkout_page_credits_once_after_the_delay(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control, creditDelaySeconds=0.4)
    provision(http, control.url, USER)
    response = _top_up(
        http, control.url, "25.00", externalUserId=USER, successUrl=SUCCESS, cancelUrl=CANCEL
    )
    assert response.status_code == 200
    body = response.json()
    assert body["amountUsdMicros"] == "25000000"
    session_id = body["sessionId"]
    assert session_id.startswith("cs_")
    assert body["checkoutUrl"] == f"{control.url}/checkout/c/pay/{session_id}"
    page = http.get(body["checkoutUrl"])
    assert page.status_code == 200
    assert "$25.00" in page.text
    assert f'href="{CANCEL}"' in page.text
    assert _wallet(http, control.url)["balance"]["usdMicros"] == "0"  # nothing before paying

    paid = http.post(body["checkoutUrl"], allow_redirects=False)
    assert (paid.status_code, paid.headers["location"]) == (303, SUCCESS)
    assert _wallet(http, control.url)["balance"]["usdMicros"] == "0"  # the webhook is late
    again = http.post(body["checkoutUrl"], allow_redirects=False)  # a double submit
    reload = http.get(body["checkoutUrl"], allow_redirects=False)
    assert (again.status_code, reload.status_code) == (303, 303)
    time.sleep(0.8)
    http.post(body["checkoutUrl"], allow_redirects=False)
    time.sleep(0.5)
    wallet = _wallet(http, control.url)
    assert wallet["balance"] == {
        "usdMicros": "25000000",
        "usd": "25.00",
        "lifetimeGrantedUsdMicros": "25000000",
        "consumedUsdMicros": "0",
    }
    state = wallet["billingState"]
    assert state["funding"]["prepaid"] == _money(25_000_000, "25.00")
    assert state["funding"]["spendable"] == _money(30_000_000, "30.00")  # + the Starter's $5
    assert (state["status"], state["canSpend"]) == ("active", True)
    customer = control.billing_customer(USER)
    assert customer["grantKeys"] == [f"topup:{session_id}"]
    (invoice,) = http.get(f"{control.url}{APP}/users/{USER}/invoices", auth=BASIC).json()["items"]
    assert (invoice["invoiceType"], invoice["totalAmount"]) == ("payment", "25.00")


def test_cancelled_checkout_records_nothing(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    body = _top_up(
        http, control.url, "10.00", externalUserId=USER, successUrl=SUCCESS, cancelUrl=CANCEL
    ).json()
    assert f'href="{CANCEL}"' in http.get(body["checkoutUrl"]).text
    assert control.billing_customer(USER)["grantKeys"] == []
    assert _wallet(http, control.url)["balance"]["usdMicros"] == "0"
    assert http.get(f"{control.url}/checkout/c/pay/cs_test_nope").status_code == 404


# --- merchant: network fees from the end user's own wallet --------------------------------


def test_merchant_usage_spends_the_wallet_then_the_signer_refuses_483(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    control.set_balance(USER, 999_000_000)  # the owner_rollup balance is not the payer here
    control.billing_customer(USER, prepaidUsdMicros=0)
    start = control.billing_customer(USER)
    assert start["spendableUsdMicros"] == "5000000"  # the Starter's included usage
    session = signer_session(http, control.url, USER)
    assert (session["balanceUsdMicros"], session["lifetimeGrantedUsdMicros"]) == (
        "5000000", "5000000",
    )  # fmt: skip
    _, first = paid_call(http, control.url, USER, runner=SDXL_RUNNER)
    assert first.status_code == 200
    (event,) = control.events()
    fee = int(event["usdMicros"])
    assert fee == 14306  # 4,768,371,000,000 wei at $3,000/ETH, rounded up
    after = control.billing_customer(USER)
    assert after["includedRemainingUsdMicros"] == str(5_000_000 - fee)
    assert after["prepaidUsdMicros"] == "0"
    user = next(row for row in control.users() if row["externalUserId"] == USER)
    assert user["balanceUsdMicros"] == "999000000"  # owner_rollup balance untouched

    control.billing_customer(USER, includedConsumedUsdMicros=5_000_000)  # nothing left
    assert control.billing_customer(USER)["spendableUsdMicros"] == "0"
    refused = http.post(
        f"{control.url}/api/v1/oidc/token", auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "sign:mint_user_token",
              "external_user_id": USER},
    )  # fmt: skip
    assert refused.status_code == 402
    assert refused.json() == {
        "error": "trial_credits_exhausted",
        "error_description": "Payment method required",
        "reason": "no_payment_method",
    }
    # A session minted while there was credit is re-authorized at the signer: 483.
    control.billing_customer(USER, prepaidUsdMicros=1_000_000)
    token = signer_session(http, control.url, USER)["access_token"]
    control.billing_customer(USER, prepaidUsdMicros=0)
    sender = signer_address(http, control.url, token)
    params = challenge(http, control.url, SDXL_RUNNER, sender, {"prompt": "p", "size": "64x64"})
    payment = sign_payment(http, control.url, token, params)
    assert payment.status_code == 483
    assert payment.json() == {"error": {"message": "Payment method required"}}
    assert len(control.events()) == 1  # no ticket, no usage event


def test_merchant_starter_with_a_card_still_stops_at_zero(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    control.billing_customer(USER, includedConsumedUsdMicros=5_000_000, card=True)
    refused = http.post(
        f"{control.url}/api/v1/oidc/token", auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "sign:mint_user_token",
              "external_user_id": USER},
    )  # fmt: skip
    assert refused.status_code == 402
    assert refused.json()["reason"] == "overage_not_available"
    assert refused.json()["error_description"] == "Add funds to continue"
    state = http.get(
        f"{control.url}{APP}/billing/state", auth=BASIC, params={"externalUserId": USER}
    ).json()
    assert (state["status"], state["reason"], state["collection"]["nextAction"]) == (
        "blocked", "overage_not_available", "add_funds",
    )  # fmt: skip


def test_merchant_billing_off_mint_is_ungated(
    control: SandboxControl, http: requests.Session
) -> None:
    control.set_billing(billingMode="merchant")
    control.billing_customer(USER, includedConsumedUsdMicros=5_000_000)
    session = signer_session(http, control.url, USER)
    assert (session["balanceUsdMicros"], session["lifetimeGrantedUsdMicros"]) == ("0", "0")  # T#121


# --- plans, checkout, subscription ---------------------------------------------------------


def _plans(http: requests.Session, base: str) -> list[dict[str, Any]]:
    body = http.get(f"{base}{APP}/plans", auth=BASIC).json()
    assert body["apiVersion"] == 1
    plans: list[dict[str, Any]] = body["plans"]
    return plans


def test_default_plans_and_a_priced_plan(control: SandboxControl, http: requests.Session) -> None:
    network, starter = _plans(http, control.url)
    assert (network["name"], network["type"], network["isNetworkDefault"]) == (
        "__pymthouse_network_default__", "free", True,
    )  # fmt: skip
    assert network["sync"] == {
        "status": "not_applicable", "syncedAt": None, "errorCode": None, "errorMessage": None,
    }  # fmt: skip
    assert (starter["type"], starter["priceAmount"], starter["includedUsdMicros"]) == (
        "usage", "0", "5000000",
    )  # fmt: skip
    assert starter["isStarterDefault"] is True
    assert starter["sync"]["status"] == "pending"
    assert "resolvedBehavior" in starter
    assert "resolvedBehavior" not in network
    pro = control.add_plan("Pro", type="subscription", priceUsdMicros=20_000_000,
                           includedUsdMicros=25_000_000)  # fmt: skip
    assert (pro["priceAmount"], pro["includedUsdMicros"]) == ("20.00", "25000000")
    assert [plan["name"] for plan in _plans(http, control.url)][-1] == "Pro"


def test_plan_checkout_without_a_card_saves_one_and_subscribes_nothing(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    pro = control.add_plan("Pro", type="subscription", priceUsdMicros=20_000_000,
                           includedUsdMicros=25_000_000)  # fmt: skip
    request = {"planId": pro["id"], "externalUserId": USER, "successUrl": SUCCESS}
    first = http.post(f"{control.url}{APP}/billing/checkout", auth=BASIC, json=request)
    assert first.status_code == 200
    assert list(first.json()) == ["checkoutUrl"]  # setup mode: no subscriptionId
    assert "Save card" in http.get(first.json()["checkoutUrl"]).text
    saved = http.post(first.json()["checkoutUrl"], allow_redirects=False)
    assert (saved.status_code, saved.headers["location"]) == (303, SUCCESS)
    subscription = http.get(f"{control.url}{APP}/users/{USER}/subscription", auth=BASIC).json()
    assert subscription["livePlan"]["name"] == "__pymthouse_starter__"  # not subscribed
    (card,) = http.get(f"{control.url}{APP}/users/{USER}/payment-methods", auth=BASIC).json()[
        "paymentMethods"
    ]
    assert (card["isDefault"], card["last4"]) == (True, "4242")

    second = http.post(f"{control.url}{APP}/billing/checkout", auth=BASIC, json=request).json()
    assert second["checkoutUrl"] == SUCCESS
    assert second["subscriptionId"].startswith("sub_")
    subscription = http.get(f"{control.url}{APP}/users/{USER}/subscription", auth=BASIC).json()
    assert subscription["subscription"]["planId"] == pro["id"]
    assert subscription["livePlan"]["includedUsage"] == {"usdMicros": "25000000", "usd": "25.00"}
    (invoice,) = http.get(f"{control.url}{APP}/users/{USER}/invoices", auth=BASIC).json()["items"]
    assert (invoice["totalAmount"], invoice["status"]) == ("20.00", "paid")
    hosted = http.get(
        f"{control.url}{APP}/users/{USER}/invoices/{invoice['id']}/hosted-url", auth=BASIC
    )
    assert hosted.status_code == 200
    assert hosted.json()["hostedInvoiceUrl"].endswith(invoice["id"])
    again = http.post(f"{control.url}{APP}/billing/checkout", auth=BASIC, json=request)
    assert again.json() == {"error": "User is already on this plan"}


def test_subscription_change_cancel_and_resume(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    pro = control.add_plan("Pro", type="usage", overageRateUsd="0.0000015")
    url = f"{control.url}{APP}/users/{USER}/subscription"
    needs_card = http.post(f"{url}/change", auth=BASIC, json={"planId": pro["id"]}).json()
    starter = _plans(http, control.url)[1]
    assert needs_card["planId"] == starter["id"]  # still the current plan
    assert needs_card["timing"] == "immediate"
    assert needs_card["checkoutUrl"].startswith(f"{control.url}/checkout/c/pay/cs_")
    control.billing_customer(USER, card=True)
    changed = http.post(f"{url}/change", auth=BASIC, json={"planId": pro["id"]}).json()
    assert (changed["planId"], "checkoutUrl" in changed) == (pro["id"], False)
    unknown = http.post(f"{url}/change", auth=BASIC, json={"planId": "nope"})
    assert (unknown.status_code, unknown.json()) == (502, {"error": "Subscription change failed"})

    nothing = http.delete(f"{url}/pending-change", auth=BASIC, json={"confirm": True})
    assert (nothing.status_code, nothing.json()["code"]) == (404, "nothing_to_resume")
    cancel = http.delete(url, auth=BASIC, json={"confirm": True}).json()
    assert (cancel["planId"], cancel["scheduledPlanKey"]) == (pro["id"], "__pymthouse_starter__")
    pending = http.get(url, auth=BASIC).json()["pendingCancel"]
    assert pending["planId"] == pro["id"]
    resumed = http.delete(f"{url}/pending-change", auth=BASIC, json={"confirm": True}).json()
    assert resumed["resumed"] is True
    assert http.get(url, auth=BASIC).json()["pendingCancel"] is None
    now = http.delete(url, auth=BASIC, json={"confirm": True, "timing": "immediate"}).json()
    assert now["planId"] == starter["id"]
    again = http.delete(url, auth=BASIC, json={"confirm": True})
    assert (again.status_code, again.json()["code"]) == (404, "already_starter")


def test_owner_rollup_with_billing_on_still_refuses_end_user_plans(
    control: SandboxControl, http: requests.Session
) -> None:
    control.set_billing(billingEnabled=True)
    cancel = http.delete(
        f"{control.url}{APP}/users/{USER}/subscription", auth=BASIC, json={"confirm": True}
    )
    assert (cancel.status_code, cancel.json()) == (400, OWNER_WALLET)


def test_faults_reach_the_billing_routes(control: SandboxControl, http: requests.Session) -> None:
    control.add_fault("GET", f"{APP}/billing/wallet", status=502, body={"error": "boom"}, times=1)
    assert http.get(f"{control.url}{APP}/billing/wallet", auth=BASIC).status_code == 502
    assert http.get(f"{control.url}{APP}/billing/wallet", auth=BASIC).status_code == 200


def test_reset_restores_the_local_server_defaults(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    control.reset()
    assert control.billing() == {
        "billingMode": "owner_rollup",
        "billingEnabled": False,
        "billingOn": False,
        "connectReady": False,
        "creditDelaySeconds": 1.0,
        "softNegativeUsdMicros": None,
        "sessions": [],
    }


def _mint(http: requests.Session, base: str, ext: str = USER) -> requests.Response:
    return http.post(
        f"{base}/api/v1/oidc/token", auth=BASIC,
        data={"grant_type": "client_credentials", "scope": "sign:mint_user_token",
              "external_user_id": ext},
    )  # fmt: skip


def _state(http: requests.Session, base: str) -> dict[str, Any]:
    response = http.get(f"{base}{APP}/billing/state", auth=BASIC, params={"externalUserId": USER})
    body: dict[str, Any] = response.json()
    return body


def test_overage_with_a_card_on_a_paid_plan_runs_to_the_ceiling(
    control: SandboxControl, http: requests.Session
) -> None:
    _merchant(control)
    metered = control.add_plan("Metered", type="usage")
    control.billing_customer(USER, card=True)
    changed = http.post(f"{control.url}{APP}/users/{USER}/subscription/change", auth=BASIC,
                        json={"planId": metered["id"]})  # fmt: skip
    assert changed.json()["planId"] == metered["id"]
    control.billing_customer(USER, prepaidUsdMicros=-800_000)  # $0.80 unbilled
    state = _state(http, control.url)
    assert (state["status"], state["canSpend"]) == ("overage", True)
    assert state["funding"]["overage"]["eligible"] is True
    assert state["funding"]["overage"]["unbilledDebt"] == _money(800_000, "0.80")
    assert state["funding"]["overage"]["remaining"] == _money(1_200_000, "1.20")
    assert state["funding"]["overage"]["utilizationBps"] == 4000
    assert _mint(http, control.url).status_code == 200
    control.billing_customer(USER, prepaidUsdMicros=-1_500_000)  # $0.50 left <= $1.00 lead
    state = _state(http, control.url)
    assert (state["status"], state["collection"]["nextAction"]) == (
        "at_risk",
        "awaiting_settlement",
    )
    control.billing_customer(USER, prepaidUsdMicros=-2_000_000)  # at the $2.00 ceiling
    state = _state(http, control.url)
    assert (state["status"], state["reason"]) == ("blocked", "debt_ceiling_reached")
    refused = _mint(http, control.url)
    assert (refused.status_code, refused.json()["reason"]) == (402, "debt_ceiling_reached")
    assert refused.json()["error_description"] == (
        "Overage limit reached while payment is collected"
    )
    control.set_billing(softNegativeUsdMicros="0")  # no ceiling: overage alone carries spend
    assert _state(http, control.url)["status"] == "overage"
    assert _mint(http, control.url).status_code == 200


def test_auto_top_up_refills_at_the_gate(control: SandboxControl, http: requests.Session) -> None:
    _merchant(control)
    control.billing_customer(USER, includedConsumedUsdMicros=5_000_000, card=True)
    enabled = http.patch(
        f"{control.url}{APP}/billing/wallet",
        auth=BASIC,
        json={"externalUserId": USER, "enabled": True, "amountUsd": "20.00"},
    )
    assert enabled.json() == {
        "externalUserId": USER, "autoTopUp": {"enabled": True, "amountUsd": "20.00"},
    }  # fmt: skip
    session = signer_session(http, control.url, USER)
    assert session["balanceUsdMicros"] == "20000000"
    (grant,) = control.billing_customer(USER)["grantKeys"]
    assert grant.startswith("autotopup:pi_")
    assert _mint(http, control.url).status_code == 200
    assert len(control.billing_customer(USER)["grantKeys"]) == 1  # spendable > 0: no charge


def test_owner_top_up_forwards_the_idempotency_key(
    control: SandboxControl, http: requests.Session
) -> None:
    control.set_billing(billingEnabled=True, creditDelaySeconds=0)
    key = {"Idempotency-Key": "probe-topup-1"}
    first = http.post(f"{control.url}{APP}/billing/wallet/top-up", auth=BASIC, headers=key,
                      json={"amountUsd": "25.00", "successUrl": SUCCESS})  # fmt: skip
    again = http.post(f"{control.url}{APP}/billing/wallet/top-up", auth=BASIC, headers=key,
                      json={"amountUsd": "25.00", "successUrl": SUCCESS})  # fmt: skip
    other = _top_up(http, control.url, "25.00", successUrl=SUCCESS)
    assert first.json()["sessionId"] == again.json()["sessionId"] != other.json()["sessionId"]
    http.post(first.json()["checkoutUrl"], allow_redirects=False)
    wallet = _wallet(http, control.url, None)
    assert wallet["balance"]["usdMicros"] == "25000000"  # the owner's shared wallet
    assert wallet["billingState"]["subject"]["type"] == "owner"


def test_start_up_billing_comes_from_the_environment() -> None:
    """``make run`` can start the sandbox as a merchant app with billing on."""
    settings = load_settings(
        {
            "SANDBOX_BILLING_MODE": "merchant",
            "SANDBOX_BILLING_ENABLED": "true",
            "SANDBOX_CONNECT_READY": "1",
            "SANDBOX_CREDIT_DELAY_SECONDS": "0.25",
        }
    )
    defaults = settings.billing_defaults
    assert (defaults.mode, defaults.enabled, defaults.connect_ready) == ("merchant", True, True)
    assert defaults.credit_delay_seconds == 0.25
    plain = load_settings({}).billing_defaults
    assert (plain.mode, plain.enabled, plain.connect_ready, plain.credit_delay_seconds) == (
        "owner_rollup", False, False, 1.0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="SANDBOX_BILLING_MODE"):
        load_settings({"SANDBOX_BILLING_MODE": "rollup"})


def test_a_merchant_sandbox_process_resets_to_its_start_up_billing() -> None:
    env = {"SANDBOX_BILLING_MODE": "merchant", "SANDBOX_BILLING_ENABLED": "true",
           "SANDBOX_CONNECT_READY": "true"}  # fmt: skip
    with SandboxProcess(port=free_port(), env=env) as process:
        control = SandboxControl(process.url)
        control.set_billing(billingMode="owner_rollup", connectReady=False)
        control.reset()
        billing = control.billing()
        assert (billing["billingMode"], billing["billingOn"], billing["connectReady"]) == (
            "merchant", True, True,
        )  # fmt: skip
