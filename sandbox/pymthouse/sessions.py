"""SignerSession minting, shared by the global and the app-scoped token endpoints."""

from __future__ import annotations

import logging

from starlette.responses import Response

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
    if metered and user.balance_usd_micros <= 0:
        body: dict[str, object] = {
            "error": "trial_credits_exhausted",
            "error_description": "Add funds to continue",
            "reason": "overage_not_available",
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
        "balanceUsdMicros": str(user.balance_usd_micros) if metered else "0",
        "lifetimeGrantedUsdMicros": str(user.lifetime_granted_usd_micros) if metered else "0",
        "signer_url": state.settings.signer_url,
        "discovery_url": discovery_url or f"{state.settings.signer_url}/discover-orchestrators",
        "issued_token_type": ACCESS_TOKEN_TYPE,
    }
    if caps:
        session["caps"] = caps
    if correlation_id is not None:
        session["correlation_id"] = correlation_id
    return json_response(session, headers=dict(NO_STORE))
