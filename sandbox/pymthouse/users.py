"""Builder users (``/api/v1/apps/{app}/users``) and user-token minting (§5, §6).

Status codes and bodies follow docs/upstream.md §P4/§P5 (as observed from pymthouse@5ee7cfc).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.keys import TokenError, token_scopes
from sandbox.pymthouse.sessions import MIXED_SCOPE_DESCRIPTION, mixes_sign_job_with_admin
from sandbox.state import SandboxState
from sandbox.web import (
    InvalidJSONError,
    get_state,
    json_response,
    parse_authorization,
    read_json,
    secret_matches,
)

logger = logging.getLogger(__name__)

USER_STATUSES = ("active", "inactive")


def _unauthorized() -> Response:
    return json_response({"error": "Unauthorized"}, 401)


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _can_access_users(state: SandboxState, request: Request, path_id: str, scope: str) -> bool:
    """pymthouse ``canAccessUsers``: Basic M2M for this app, or a Bearer for the path id.

    A Bearer matches on its ``client_id`` claim against the literal path id, so an M2M
    access token (client_id ``m2m_…``) only works with the ``m2m_…`` id in the path
    (transcript 5e/5g/5h).
    """
    settings = state.settings
    credentials = parse_authorization(request)
    if credentials.scheme == "basic":
        return (
            path_id == settings.app_id
            and credentials.client_id == settings.m2m_client_id
            and secret_matches(credentials.client_secret, settings.m2m_client_secret)
            and scope in settings.m2m_allowed_scopes
        )
    if credentials.scheme == "bearer" and credentials.token:
        try:
            claims = state.keys.verify(credentials.token)
        except TokenError:
            return False
        return (
            path_id in (settings.app_id, settings.m2m_client_id)
            and claims.get("client_id") == path_id
            and scope in token_scopes(claims)
        )
    return False


def _parse_user_body(body: Any) -> tuple[dict[str, Any], Response | None]:
    """Validate a POST/PUT body: returns (fields, error response or None)."""
    if not isinstance(body, dict):
        body = {}
    external_user_id = body.get("externalUserId")
    if not isinstance(external_user_id, str) or not external_user_id.strip():
        return {}, _error(400, "externalUserId is required")
    fields: dict[str, Any] = {"externalUserId": external_user_id.strip()}
    status = body.get("status")
    if status is not None:
        if status not in USER_STATUSES:
            return {}, _error(400, "status must be one of: active, inactive")
        fields["status"] = status
    email = body.get("email")
    if isinstance(email, str):
        fields["email"] = email
    return fields, None


async def users_endpoint(request: Request) -> Response:
    state = get_state(request)
    path_id: str = request.path_params["app"]
    required_scope = "users:read" if request.method == "GET" else "users:write"
    if not _can_access_users(state, request, path_id, required_scope):
        return _unauthorized()

    if request.method == "GET":
        return json_response({"users": [user.row(path_id) for user in state.users.values()]})

    if request.method == "DELETE":
        external_user_id = (request.query_params.get("externalUserId") or "").strip()
        if not external_user_id:
            return _error(400, "externalUserId is required")
        user = state.find_user(external_user_id)
        if user is None:
            return _error(404, "User not found")
        user.status = "inactive"
        return json_response(
            {"success": True, "status": "inactive", "correlation_id": str(uuid.uuid4())}
        )

    try:
        body = await read_json(request)
    except InvalidJSONError:
        return _error(400, "Invalid JSON")
    fields, problem = _parse_user_body(body)
    if problem is not None:
        return problem
    user = state.find_user(fields["externalUserId"])

    if request.method == "PUT":
        if user is None:
            return _error(404, "User not found")
        if "email" in fields:
            user.email = fields["email"]
        if "status" in fields:
            user.status = fields["status"]
        return json_response({"success": True})

    # POST: idempotent upsert on externalUserId, 201 when inserted, 200 when it existed.
    if user is None:
        user = state.create_user(
            fields["externalUserId"],
            email=fields.get("email"),
            status=fields.get("status", "active"),
        )
        return json_response(user.row(path_id), 201)
    if "email" in fields:
        user.email = fields["email"]
    if "status" in fields:
        user.status = fields["status"]
    return json_response(user.row(path_id), 200)


async def user_token_endpoint(request: Request) -> Response:
    """``POST /api/v1/apps/{app}/users/{ext}/token``: Basic only, 900 s user JWT."""
    state = get_state(request)
    settings = state.settings
    correlation_id = str(uuid.uuid4())

    def error(status: int, code: str, description: str) -> Response:
        body = {"error": code, "error_description": description, "correlation_id": correlation_id}
        return json_response(body, status)

    credentials = parse_authorization(request)
    if not (
        credentials.scheme == "basic"
        and credentials.client_id == settings.m2m_client_id
        and secret_matches(credentials.client_secret, settings.m2m_client_secret)
    ):
        return error(401, "invalid_client", "failed confidential-client authentication")
    if request.path_params["app"] != settings.app_id:
        return error(403, "forbidden", "client_id does not match the requested app")

    scope = "sign:job"
    raw = await request.body()
    if raw.strip():
        try:
            body = await read_json(request)
        except InvalidJSONError:
            return error(400, "invalid_request", "request body must be valid JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_request", "request body must be a JSON object")
        if "scope" in body:
            if not isinstance(body["scope"], str) or not body["scope"].strip():
                return error(400, "invalid_request", "scope must be a non-empty string")
            scope = body["scope"]
    scopes = list(dict.fromkeys(scope.split()))
    if any(item == "admin" or item not in settings.app_allowed_scopes for item in scopes):
        return error(400, "invalid_scope", "requested scope is not allowed for this client")
    if mixes_sign_job_with_admin(scopes):
        return error(400, "invalid_scope", MIXED_SCOPE_DESCRIPTION)

    user = state.find_user(request.path_params["ext"])
    if user is None or user.status != "active":
        return error(404, "not_found", "the provisioned user could not be resolved")

    token, _claims = state.keys.mint_user_token(
        app_id=settings.app_id,
        external_user_id=user.external_user_id,
        app_user_id=user.id,
        scopes=scopes,
        billing_subject_key=state.owner_id,
    )
    return json_response(
        {
            "access_token": token,
            "refresh_token": f"pmth_{secrets.token_hex(32)}",
            "token_type": "Bearer",
            "expires_in": 900,
            "scope": " ".join(scopes),
            "subject_type": "app_user",
            "correlation_id": correlation_id,
        }
    )


routes = [
    Route("/api/v1/apps/{app}/users", users_endpoint, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/api/v1/apps/{app}/users/{ext}/token", user_token_endpoint, methods=["POST"]),
]
