"""SignerSession minting, shared by the global and the app-scoped token endpoints."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.responses import Response

from sandbox.billing import REASON_MESSAGES
from sandbox.state import SandboxState
from sandbox.web import NO_STORE, json_response

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

# docs/upstream.md §P3.1: everything but sign:job counts as administrative when mixing.
ADMIN_SCOPES = frozenset(
    {"users:read", "users:write", "users:token", "device:approve", "admin", "sign:mint_user_token"}
)
MIXED_SCOPE_DESCRIPTION = "sign:job cannot be combined with administrative scopes in the same token"


def mixes_sign_job_with_admin(scopes: list[str]) -> bool:
    return "sign:job" in scopes and any(scope in ADMIN_SCOPES for scope in scopes)


def signer_session_response(
    state: SandboxState,
    external_user_id: str,
    *,
    correlation_id: str | None = None,
    caps: list[str] | None = None,
    discovery_url: str | None = None,
) -> Response:
    """Auto-provision the user, apply the balance gate, and mint a 300 s signer JWT.

    With OpenMeter "absent" (control switch off) pymthouse is permissive: the mint
    succeeds and reports "0" balances (observed from pymthouse@5ee7cfc with hosted billing off).
    """
    user = state.resolve_or_create_user(external_user_id)
    metered = state.config.open_meter_enabled
    balance, lifetime = user.balance_usd_micros, user.lifetime_granted_usd_micros
    refusal = "overage_not_available" if metered and balance <= 0 else None
    if state.billing.is_merchant:
        # Merchant (pymthouse/pymthouse@5ee7cfc7 src/lib/oidc/mint-user-signer-token.ts,
        # src/lib/openmeter/spendable-allowance.ts): the end user's own customer pays;
        # spendable = prepaid + included left this month; no gate without hosted billing.
        metered = state.billing_on
        book = state.billing
        customer = book.customer(book.customer_key(external_user_id))
        now = datetime.now(UTC)
        refusal = book.refusal(customer, now) if metered else None  # may auto top up
        balance = book.spendable(customer, now)
        lifetime = customer.lifetime_granted_usd_micros + book.included_total(customer)
    if refusal is not None:
        body: dict[str, object] = {
            "error": "trial_credits_exhausted",
            "error_description": REASON_MESSAGES[refusal],
            "reason": refusal,
        }
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        return json_response(body, 402, headers=dict(NO_STORE))
    token, _claims = state.keys.mint_signer_token(
        app_id=state.settings.app_id,
        external_user_id=external_user_id,
        billing_subject_key=state.owner_id,
    )
    session: dict[str, object] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "sign:job",
        "balanceUsdMicros": str(balance) if metered else "0",
        "lifetimeGrantedUsdMicros": str(lifetime) if metered else "0",
        "signer_url": state.settings.signer_url,
        "discovery_url": discovery_url or f"{state.settings.signer_url}/discover-orchestrators",
        "issued_token_type": ACCESS_TOKEN_TYPE,
    }
    if caps:
        session["caps"] = caps
    if correlation_id is not None:
        session["correlation_id"] = correlation_id
    return json_response(session, headers=dict(NO_STORE))
