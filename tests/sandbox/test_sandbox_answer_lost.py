"""The "ticket issued, answer lost" faults: the signer really pays, the client hears nothing.

``answerLost`` faults run the handler first, so the payment is issued exactly as a real
200 (one usage event on the manifest paid for, the user debited), and only then is the
answer stalled past the client's read timeout or the connection dropped.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.sandbox.helpers import (
    DEFAULT_PRICE,
    SDXL_RUNNER,
    bearer,
    challenge,
    sign_payment,
    signer_address,
    signer_session,
)
from tests.sandbox_server import SandboxControl, SandboxError

PAYMENT = "/signer/generate-live-payment"
USER = "answer-lost-user"


def _challenge(http: requests.Session, base: str) -> tuple[str, dict[str, object]]:
    token = signer_session(http, base, USER)["access_token"]
    params = challenge(http, base, SDXL_RUNNER, signer_address(http, base, token))
    return token, params


def _pay(
    http: requests.Session, base: str, token: str, params: dict[str, object], timeout: float
) -> requests.Response:
    """``sign_payment`` with a client read timeout."""
    body = {
        "orchestrator": params["payment_params"],
        "type": "fixed",
        "ManifestID": params["manifest_id"],
        "maxPrice": {"price": str(DEFAULT_PRICE), "currency": "wei", "unit": "fixed"},
    }
    return http.post(f"{base}{PAYMENT}", headers=bearer(token), json=body, timeout=timeout)


def _consumed(control: SandboxControl) -> int:
    [user] = [u for u in control.users() if u["externalUserId"] == USER]
    return int(user["consumedUsdMicros"])


@pytest.mark.parametrize(
    ("kind", "delay", "client_error"),
    [("stall", 1.5, requests.ReadTimeout), ("drop", None, requests.ConnectionError)],
)
def test_the_ticket_is_issued_and_the_client_gets_no_answer(
    http: requests.Session,
    base: str,
    control: SandboxControl,
    kind: str,
    delay: float | None,
    client_error: type[Exception],
) -> None:
    token, params = _challenge(http, base)
    fault_id = control.add_fault("POST", PAYMENT, answer_lost=kind, delay=delay, times=1)

    with pytest.raises(client_error) as caught:
        _pay(http, base, token, params, timeout=0.5)
    assert not isinstance(caught.value, requests.HTTPError)

    # The usage event exists, exactly as for a 200 the client received.
    [event] = control.events()
    assert (event["source"], event["manifestId"], event["externalUserId"]) == (
        "signer",
        params["manifest_id"],
        USER,
    )
    assert event["feeWei"] == "4768371000000"
    assert _consumed(control) == int(event["usdMicros"]) == 14_306
    [record] = control.requests(path=PAYMENT)
    assert (record["faultId"], record["status"], record["answerLost"]) == (fault_id, 200, kind)
    assert record["dropped"] is (kind == "drop")
    # times=1: the next payment is answered normally, and is a second ticket.
    _token, second = _challenge(http, base)
    assert sign_payment(http, base, token, second).status_code == 200
    assert [e["manifestId"] for e in control.events()] == [
        params["manifest_id"],
        second["manifest_id"],
    ]


def test_a_stalled_answer_arrives_after_the_delay(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    token, params = _challenge(http, base)
    control.add_fault("POST", PAYMENT, answer_lost="stall", delay=0.6, times=1)
    started = time.monotonic()

    response = sign_payment(http, base, token, params)

    assert time.monotonic() - started >= 0.6
    assert response.status_code == 200
    assert set(response.json()) == {"payment", "segCreds", "state"}
    assert len(control.events()) == 1


def test_a_delay_only_fault_past_the_read_timeout_issues_no_ticket(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    """The contrast: a delay acts before the handler, which then finds the client gone."""
    token, params = _challenge(http, base)
    control.add_fault("POST", PAYMENT, delay=1.0, times=1)

    with pytest.raises(requests.ReadTimeout):
        _pay(http, base, token, params, timeout=0.3)
    time.sleep(1.2)  # the fault's delay has passed and the handler has run

    assert control.events() == []
    assert _consumed(control) == 0


def test_answer_lost_faults_are_validated(control: SandboxControl) -> None:
    for spec, message in (
        ({"answer_lost": "later"}, "answerLost must be one of: stall, drop"),
        ({"answer_lost": "stall"}, "needs a delay"),
        ({"answer_lost": "drop", "status": 500}, "no status or drop"),
        ({"answer_lost": "drop", "drop": True}, "no status or drop"),
    ):
        with pytest.raises(SandboxError, match=message):
            control.add_fault("POST", PAYMENT, **spec)
    assert control.add_fault("POST", PAYMENT, answer_lost="drop")
    [listed] = [fault for fault in control._call("GET", "/faults")]
    assert (listed["answerLost"], listed["drop"], listed["status"]) == ("drop", False, None)
