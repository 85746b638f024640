"""pymthouse refusing the per-request credential mint, end to end (issue 15 §15).

The answers are the real server's (docs: pymthouse-api.md §4.2 / §6, transcript §6d and
§17c), served by the sandbox's control-API faults on the mint endpoint. Each ends the
generation at once with a clear error: no retry, nothing asked of the signer or the
runners, no ticket, and the credit hold released with no charge.
"""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import EntryKind, Hold, HoldStatus
from inference.models import Generation, GenerationStatus
from inference.services import FAILURE_MESSAGES, generation_create, generation_run
from tests.billing.conftest import account_of
from tests.inference.paying_user import CREDIT, ledger_kinds, pay_as_you_go_user
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db(transaction=True)

SIGNER_MINT = "/api/v1/oidc/token"
CORRELATION = "74cad91c-db41-4fda-8e04-974285ee40a1"
INVALID_SCOPE_403 = {
    "error": "invalid_scope",
    "error_description": "calling client lacks users:token",
    "correlation_id": CORRELATION,
}
INVALID_SCOPE_400 = {
    "error": "invalid_scope",
    "error_description": "requested scope is not allowed for this client",
    "correlation_id": CORRELATION,
}
NOT_FOUND_404 = {
    "error": "not_found",
    "error_description": "the provisioned user could not be resolved",
    "correlation_id": CORRELATION,
}


def _run(user: Any, backend_name: str | None = None) -> Generation:
    generation = generation_create(
        owner=user, prompt="a lighthouse", width=512, height=384, seed=3, enqueue=False
    )
    outcome = generation_run(generation_id=str(generation.pk), backend_name=backend_name)
    assert isinstance(outcome, Generation)  # ended by this attempt, not re-queued
    return Generation.objects.get(pk=generation.pk)


def _assert_refused_and_released(generation: Generation, code: str, user: Any) -> None:
    assert (generation.status, generation.error_code) == (GenerationStatus.FAILED, code)
    assert generation.error_message == FAILURE_MESSAGES[code]
    assert generation.payment_claimed_at is None
    assert generation.manifest_id == ""
    assert generation.attempts == 1
    hold = Hold.objects.get(generation_id=generation.pk)
    assert (hold.status, hold.charged_micros) == (HoldStatus.RELEASED, None)
    account = account_of(user)
    assert (account.balance_micros, account.held_micros) == (CREDIT, 0)
    assert ledger_kinds(user) == [EntryKind.GRANT, EntryKind.HOLD, EntryKind.HOLD_RELEASE]


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (403, INVALID_SCOPE_403, "upstream_auth"),
        (400, INVALID_SCOPE_400, "upstream_auth"),
        (404, NOT_FOUND_404, "account_unavailable"),
    ],
    ids=["403-invalid_scope", "400-invalid_scope", "404-not_found"],
)
def test_signer_mint_refused_fails_once_with_no_ticket_and_no_charge(
    sandbox: SandboxControl, status: int, body: dict[str, str], code: str
) -> None:
    user = pay_as_you_go_user()
    sandbox.add_fault("POST", SIGNER_MINT, status=status, body=body)  # every mint
    sandbox.clear_requests()

    generation = _run(user)

    _assert_refused_and_released(generation, code, user)
    assert [r["status"] for r in sandbox.requests(SIGNER_MINT)] == [status]  # no retry
    assert sandbox.requests("/signer") == []
    assert sandbox.requests("/apps/") == []
    assert sandbox.events() == []


@pytest.mark.parametrize(
    ("status", "body", "code", "mints"),
    [
        (403, INVALID_SCOPE_403, "upstream_auth", 1),
        # Not provisioned upstream: provision once, mint once more, then give up.
        (404, NOT_FOUND_404, "account_unavailable", 2),
    ],
    ids=["403-invalid_scope", "404-not_found"],
)
def test_user_token_mint_refused_for_the_gateway_fails_with_no_charge(
    sandbox: SandboxControl,
    settings: Any,
    status: int,
    body: dict[str, str],
    code: str,
    mints: int,
) -> None:
    settings.LIVEPEER_GATEWAY_HONOURS_USER_TOKENS = True
    user = pay_as_you_go_user()
    user_token = f"/api/v1/apps/{settings.PYMTHOUSE_PUBLIC_CLIENT_ID}/users/"
    sandbox.add_fault(
        "POST", f"{user_token}{user.external_user_id}/token", status=status, body=body
    )
    sandbox.clear_requests()

    generation = _run(user, backend_name="ai-gateway")

    _assert_refused_and_released(generation, code, user)
    minted = [r for r in sandbox.requests(user_token) if r["path"].endswith("/token")]
    assert [r["status"] for r in minted] == [status] * mints
    provisioned = [
        r for r in sandbox.requests(user_token.rstrip("/")) if r["path"].endswith("/users")
    ]
    assert len(provisioned) == mints - 1
    assert sandbox.requests("/text-to-image") == []  # the gateway was never called
    assert sandbox.events() == []
