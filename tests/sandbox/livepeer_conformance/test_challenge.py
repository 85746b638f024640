"""Routing (Go ServeMux, the 301) and the unpaid call (GL server/ai_http.go runnerChallenge).

GL = livepeer/go-livepeer@176aa415ccea4f9861e0dd44e981cda17fb36f52.
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.sandbox.helpers import (
    SDXL_RUNNER,
)
from tests.sandbox.livepeer_conformance.support import (
    JOB,
    Caller,
    assert_go_json,
    assert_go_text,
)
from tests.sandbox_server import SandboxControl

# --- routing: Go ServeMux in GL server/ai_http.go startAIServer ---


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_app_base_without_slash_is_a_301(caller: Caller, base: str, method: str) -> None:
    """GL server/ai_http.go L105 "/apps/{runner_id}/app/{app_path...}": ServeMux answers 301."""
    response = caller.http.request(
        method,
        f"{base}/apps/{SDXL_RUNNER}/app?x=1",
        json=JOB if method == "POST" else None,
        headers={"Livepeer-Payer-Address": caller.sender},
        allow_redirects=False,
    )
    assert response.status_code == 301
    assert response.headers["location"] == f"/apps/{SDXL_RUNNER}/app/?x=1"
    if method == "GET":
        assert response.text == f'<a href="/apps/{SDXL_RUNNER}/app/?x=1">Moved Permanently</a>.\n\n'
    else:
        assert (response.text, response.headers.get("content-type")) == ("", None)
    unknown = caller.http.post(f"{base}/apps/nope/app", allow_redirects=False)
    assert unknown.status_code == 301  # routing happens before the runner is looked up


def test_unknown_runner_and_unknown_paths(caller: Caller, base: str) -> None:
    """GL ai/runner/live_runner.go lockLiveRunner 404 "runner not found"; mux 404 otherwise."""
    assert_go_text(caller.http.post(f"{base}/apps/nope/app/", json=JOB), 404, "runner not found")
    params = caller.challenge()
    # {payment_url}/refresh-payment does not exist on go-livepeer.
    assert_go_text(
        caller.http.post(params["payment_url"] + "/refresh-payment", json={}),
        404,
        "404 page not found",
    )
    assert_go_text(
        caller.http.post(f"{base}/apps/{SDXL_RUNNER}/session"),
        400,
        "only persistent runners have sessions",
    )


# --- unpaid call: GL server/ai_http.go runnerChallenge / runnerSender ---


@pytest.mark.parametrize("sender", [None, "", "0x1234", "not-an-address"])
def test_unpaid_call_without_payer_address_is_402_error(
    caller: Caller, control: SandboxControl, sender: str | None
) -> None:
    headers = {} if sender is None else {"Livepeer-Payer-Address": sender}
    response = caller.http.post(caller.app(), json=JOB, headers=headers)
    assert_go_json(response, 402, "invalid live runner payment signer address")
    assert "payment_params" not in response.text
    assert control.events() == []


def test_unpaid_call_gets_the_real_challenge(
    caller: Caller, base: str, control: SandboxControl
) -> None:
    response = caller.http.post(
        caller.app(), json=JOB, headers={"Livepeer-Payer-Address": caller.sender}
    )
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["payment_params", "orchestrator", "manifest_id", "payment_url"]
    assert body["orchestrator"] == base
    assert re.fullmatch(r"[0-9a-f]{8}", body["manifest_id"])  # core.RandomManifestID
    assert body["payment_url"] == (
        f"{base}/apps/{SDXL_RUNNER}/session/{body['manifest_id']}/payment"
    )
    base64.b64decode(body["payment_params"], validate=True)
    assert caller.challenge()["manifest_id"] != body["manifest_id"]  # a new session each time
    assert control.events() == []
    assert control.requests(path="/signer/generate-live-payment") == []
