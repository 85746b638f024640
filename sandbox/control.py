"""The sandbox control API under ``/__sandbox/`` (JSON, no auth, loopback callers only)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.billing import PLAN_TYPES, Plan
from sandbox.config import BILLING_MODES, ConfigError, parse_integer, parse_seconds
from sandbox.faults import ANSWER_LOST_KINDS
from sandbox.pymthouse import usage_seed
from sandbox.runners import apply_runner_update, new_runner
from sandbox.sso import MISBEHAVIOURS, USERINFO_MODES
from sandbox.state import AppUser, Fault, SandboxState, iso_millis
from sandbox.web import get_state, json_response

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})


class ControlError(ValueError):
    pass


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    return host in LOOPBACK_HOSTS or host.startswith("127.") or host.startswith("::ffff:127.")


async def _json_body(request: Request, *, decimal_floats: bool = False) -> Any:
    """The JSON body; ``decimal_floats`` parses fractions as Decimal (config: ethUsd stays exact).

    Fault bodies keep Python's float parsing so a float a test sends (``1e+21``) is served
    back with the same text.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_float=Decimal if decimal_floats else float)
    except ValueError as exc:
        raise ControlError(f"invalid JSON: {exc}") from exc


async def _json_object(request: Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _bad_request(message: str) -> Response:
    return json_response({"error": message}, 400)


def user_json(state: SandboxState, user: AppUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "externalUserId": user.external_user_id,
        "status": user.status,
        "email": user.email,
        "balanceUsdMicros": str(user.balance_usd_micros),
        "lifetimeGrantedUsdMicros": str(user.lifetime_granted_usd_micros),
        "consumedUsdMicros": str(state.consumed_usd_micros(user)),
        "createdAt": iso_millis(user.created_at),
    }


async def reset(request: Request) -> Response:
    get_state(request).reset()
    usage_seed.clear(get_state(request))
    logger.info("sandbox state reset")
    return json_response({"ok": True})


async def list_users(request: Request) -> Response:
    state = get_state(request)
    return json_response([user_json(state, user) for user in state.users.values()])


async def set_balance(request: Request) -> Response:
    state = get_state(request)
    try:
        body = await _json_body(request)
    except ControlError as exc:
        return _bad_request(str(exc))
    if not isinstance(body, dict) or "balanceUsdMicros" not in body:
        return _bad_request("balanceUsdMicros is required")
    try:
        micros = parse_integer(body["balanceUsdMicros"], "balanceUsdMicros")
    except ConfigError as exc:
        return _bad_request(str(exc))
    user = state.set_balance(request.path_params["ext"], micros)
    return json_response(user_json(state, user))


def parse_fault(body: Any) -> Fault:
    if not isinstance(body, dict):
        raise ControlError("fault must be a JSON object")
    unknown = set(body) - {
        "method",
        "path",
        "status",
        "body",
        "headers",
        "delay",
        "drop",
        "times",
        "answerLost",
    }
    if unknown:
        raise ControlError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    method = body.get("method", "*")
    path = body.get("path")
    if not isinstance(method, str) or not method:
        raise ControlError("method must be an HTTP method or *")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ControlError("path must start with / (a trailing * makes it a prefix)")
    status = body.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ControlError("status must be an integer HTTP status")
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        raise ControlError("headers must map strings to strings")
    delay = parse_seconds(body.get("delay") or 0, "delay")
    drop = body.get("drop", False)
    if not isinstance(drop, bool):
        raise ControlError("drop must be a boolean")
    times = body.get("times")
    if times is not None:
        times = parse_integer(times, "times", minimum=1)
    answer_lost = body.get("answerLost")
    if answer_lost is not None:
        if answer_lost not in ANSWER_LOST_KINDS:
            raise ControlError(f"answerLost must be one of: {', '.join(ANSWER_LOST_KINDS)}")
        if status is not None or drop:
            raise ControlError("answerLost serves the real answer: no status or drop with it")
        if answer_lost == "stall" and delay <= 0:
            raise ControlError('answerLost "stall" needs a delay (how long the answer is held)')
    if status is None and not drop and delay <= 0 and answer_lost is None:
        raise ControlError("a fault needs a status, a delay, drop or answerLost")
    return Fault(
        id=uuid.uuid4().hex[:12],
        method=method.upper() if method != "*" else "*",
        path=path,
        status=status,
        body=body.get("body"),
        headers=headers,
        delay=delay,
        drop=drop,
        times=times,
        answer_lost=answer_lost,
    )


async def faults(request: Request) -> Response:
    state = get_state(request)
    if request.method == "GET":
        return json_response([fault.as_json() for fault in state.faults])
    if request.method == "DELETE":
        state.faults.clear()
        return json_response({"ok": True})
    try:
        fault = parse_fault(await _json_body(request))
    except (ControlError, ConfigError) as exc:
        return _bad_request(str(exc))
    state.faults.append(fault)
    logger.info("fault %s added for %s %s", fault.id, fault.method, fault.path)
    return json_response({"id": fault.id}, 201)


async def config(request: Request) -> Response:
    state = get_state(request)
    if request.method == "PUT":
        try:
            body = await _json_body(request, decimal_floats=True)
        except ControlError as exc:
            return _bad_request(str(exc))
        if not isinstance(body, dict):
            return _bad_request("config must be a JSON object")
        try:
            state.config.update_from_json(body)
        except ConfigError as exc:
            return _bad_request(str(exc))
    settings = state.settings
    return json_response(
        {
            **state.config.as_json(),
            "publicUrl": settings.public_url,
            "issuer": settings.issuer,
            "appId": settings.app_id,
            "m2mClientId": settings.m2m_client_id,
            "models": list(settings.models),
        }
    )


async def runners(request: Request) -> Response:
    """``GET`` lists the runners; ``POST`` adds one (``{id, model?, unit?, price?, …}``)."""
    state = get_state(request)
    if request.method == "GET":
        return json_response([runner.as_json() for runner in state.runners.values()])
    try:
        runner = new_runner(await _json_object(request), state.settings, state.runners)
    except (ControlError, ConfigError) as exc:
        return _bad_request(str(exc))
    state.runners[runner.runner_id] = runner
    return json_response(runner.as_json(), 201)


async def runner_detail(request: Request) -> Response:
    """``PUT`` partially updates a runner (unit, price, capacity, appFault, …); ``DELETE``."""
    state = get_state(request)
    runner = state.runners.get(request.path_params["runner_id"])
    if runner is None:
        return json_response({"error": "runner not found"}, 404)
    if request.method == "DELETE":
        del state.runners[runner.runner_id]
        return json_response({"ok": True})
    try:
        apply_runner_update(runner, await _json_object(request), state.settings.models)
    except (ControlError, ConfigError) as exc:
        return _bad_request(str(exc))
    return json_response(runner.as_json())


async def requests_log(request: Request) -> Response:
    state = get_state(request)
    if request.method == "DELETE":
        state.request_log.clear()
        return json_response({"ok": True})
    prefix = request.query_params.get("path")
    records = [r for r in state.request_log if prefix is None or r["path"].startswith(prefix)]
    return json_response(records)


async def events(request: Request) -> Response:
    return json_response([event.as_json() for event in get_state(request).events])


async def oidc_identities(request: Request) -> Response:
    """GET: the people the login page offers; POST ``{email, name?, sub?, emailVerified?}``."""
    state = get_state(request)
    if request.method == "POST":
        try:
            body = await _json_body(request)
        except ControlError as exc:
            return _bad_request(str(exc))
        email = body.get("email") if isinstance(body, dict) else None
        if not isinstance(email, str) or "@" not in email:
            return _bad_request("email is required")
        sub = body.get("sub")
        verified = body.get("emailVerified", True)
        if (sub is not None and not isinstance(sub, str)) or not isinstance(verified, bool):
            return _bad_request("sub must be a string and emailVerified a boolean")
        identity = state.sso.add_identity(
            email=email, name=str(body.get("name") or email), sub=sub, verified=verified
        )
        return json_response(identity.as_json(), 201)
    return json_response([identity.as_json() for identity in state.sso.identities.values()])


async def oidc_misbehave(request: Request) -> Response:
    """PUT ``{"idToken": <mode>, "times": n?, "userinfo": "refuse"|"serve"?}``; DELETE clears."""
    state = get_state(request)
    if request.method == "PUT":
        try:
            body = await _json_body(request)
        except ControlError as exc:
            return _bad_request(str(exc))
        if not isinstance(body, dict) or set(body) - {"idToken", "times", "userinfo"}:
            return _bad_request("expected idToken, times and/or userinfo")
        mode = body.get("idToken")
        if mode is not None and mode not in MISBEHAVIOURS:
            return _bad_request(f"idToken must be one of: {', '.join(MISBEHAVIOURS)}")
        userinfo = body.get("userinfo", state.sso.userinfo_mode)
        if userinfo not in USERINFO_MODES:
            return _bad_request(f"userinfo must be one of: {', '.join(USERINFO_MODES)}")
        times = body.get("times")
        try:
            times = None if times is None else parse_integer(times, "times", minimum=1)
        except ConfigError as exc:
            return _bad_request(str(exc))
        state.sso.misbehave, state.sso.misbehave_times = mode, times
        state.sso.userinfo_mode = str(userinfo)
        logger.info("OIDC misbehaviour set: %s", mode)
    elif request.method == "DELETE":
        state.sso.misbehave, state.sso.misbehave_times = None, None
        state.sso.userinfo_mode = "refuse"
    return json_response(
        {
            "idToken": state.sso.misbehave,
            "times": state.sso.misbehave_times,
            "userinfo": state.sso.userinfo_mode,
        }
    )


async def oidc_rotate_key(request: Request) -> Response:
    """POST ``{"keepOld": true}``: sign with a new key; the JWKS keeps the old one if asked."""
    state = get_state(request)
    try:
        body = await _json_body(request)
    except ControlError as exc:
        return _bad_request(str(exc))
    keep_old = body.get("keepOld", True) if isinstance(body, dict) else True
    if not isinstance(keep_old, bool):
        return _bad_request("keepOld must be a boolean")
    kid = state.keys.rotate(keep_old=keep_old)
    return json_response({"kid": kid, "jwks": state.keys.jwks()})


async def oidc_access_token(request: Request) -> Response:
    """POST ``{sub, claims?}``: a web-flow access token signed with the active key.

    ``claims`` overrides any claim (``aud``, ``iss``, ``exp`` ...; null removes it), so
    relying-party tests can present validly signed tokens that are wrong in one way.
    """
    state = get_state(request)
    try:
        body = await _json_body(request)
    except ControlError as exc:
        return _bad_request(str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("sub"), str):
        return _bad_request("sub is required")
    overrides = body.get("claims") or {}
    if not isinstance(overrides, dict):
        return _bad_request("claims must be an object")
    now = int(time.time())
    issuer = state.settings.issuer
    claims: dict[str, Any] = {
        "jti": uuid.uuid4().hex,
        "sub": body["sub"],
        "iat": now,
        "exp": now + 3600,
        "scope": "openid email profile",
        "client_id": state.settings.web_client_id,
        "iss": issuer,
        "aud": issuer,
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    token = state.keys.sign_compact(
        {"alg": "RS256", "typ": "at+jwt", "kid": state.keys.kid}, claims
    )
    return json_response({"access_token": token, "claims": claims})


def _billing_json(state: SandboxState) -> dict[str, Any]:
    book = state.billing
    return {
        **book.as_json(open_meter_enabled=state.config.open_meter_enabled),
        "sessions": [session.as_json() for session in book.sessions.values()],
    }


def _parse_billing(body: Any) -> dict[str, Any]:
    """Validate a whole ``PUT /__sandbox/billing`` body before anything is applied."""
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    parsed: dict[str, Any] = {}
    for key, value in body.items():
        if key == "billingMode":
            if value not in BILLING_MODES:
                raise ControlError(f"billingMode must be one of: {', '.join(BILLING_MODES)}")
            parsed["mode"] = value
        elif key in ("billingEnabled", "connectReady"):
            if not isinstance(value, bool):
                raise ControlError(f"{key} must be a boolean")
            parsed["enabled" if key == "billingEnabled" else "connect_ready"] = value
        elif key == "creditDelaySeconds":
            parsed["credit_delay_seconds"] = parse_seconds(value, key)
        elif key == "softNegativeUsdMicros":
            parsed["soft_negative_usd_micros"] = (
                None if value is None else parse_integer(value, key, minimum=0)
            )
        else:
            raise ControlError(f"unknown billing key: {key}")
    return parsed


async def billing(request: Request) -> Response:
    """GET / PUT ``{billingMode, billingEnabled, connectReady, creditDelaySeconds,
    softNegativeUsdMicros}``: the app's billing config (reset restores the defaults:
    owner_rollup, billing off, Connect not ready, 1 s credit delay)."""
    state = get_state(request)
    if request.method == "PUT":
        try:
            parsed = _parse_billing(await _json_body(request))
        except (ControlError, ConfigError) as exc:
            return _bad_request(str(exc))
        for name, value in parsed.items():
            setattr(state.billing, name, value)
        logger.info("billing config set: %s", sorted(parsed))
    return json_response(_billing_json(state))


def _parse_plan(body: dict[str, Any]) -> Plan:
    unknown = set(body) - {
        "name", "type", "priceUsdMicros", "includedUsdMicros", "billingCycle", "status",
        "overageRateUsd",
    }  # fmt: skip
    if unknown:
        raise ControlError(f"unknown plan keys: {', '.join(sorted(unknown))}")
    name, plan_type = body.get("name"), body.get("type", "subscription")
    if not isinstance(name, str) or not name.strip():
        raise ControlError("name is required")
    if plan_type not in PLAN_TYPES:
        raise ControlError(f"type must be one of: {', '.join(PLAN_TYPES)}")
    included = body.get("includedUsdMicros")
    cycle = body.get("billingCycle", "monthly")
    if cycle not in ("daily", "weekly", "monthly"):
        raise ControlError("billingCycle must be daily, weekly or monthly")
    status = body.get("status", "active")
    if status not in ("draft", "active", "phase_out"):
        raise ControlError("status must be draft, active or phase_out")
    rate = body.get("overageRateUsd")
    if rate is not None and not isinstance(rate, str):
        raise ControlError("overageRateUsd must be a decimal string")
    return Plan(
        id=str(uuid.uuid4()),
        name=name.strip(),
        type=plan_type,
        price_usd_micros=parse_integer(body.get("priceUsdMicros", 0), "priceUsdMicros", minimum=0),
        included_usd_micros=(
            None if included is None else parse_integer(included, "includedUsdMicros", minimum=0)
        ),
        billing_cycle=cycle,
        status=status,
        overage_rate_usd=rate,
    )


async def billing_plans(request: Request) -> Response:
    """POST ``{name, type, priceUsdMicros?, includedUsdMicros?, billingCycle?, status?}``:
    a plan as the app owner would create it in the dashboard (synced once billing is on)."""
    state = get_state(request)
    try:
        plan = _parse_plan(await _json_object(request))
    except (ControlError, ConfigError) as exc:
        return _bad_request(str(exc))
    state.billing.add_plan(plan)
    return json_response(plan.as_v1(state.settings.app_id, state.billing_on), 201)


def _parse_customer(body: dict[str, Any]) -> tuple[int | None, int | None, bool]:
    if set(body) - {"prepaidUsdMicros", "includedConsumedUsdMicros", "card"}:
        raise ControlError("expected prepaidUsdMicros, includedConsumedUsdMicros and/or card")
    prepaid = body.get("prepaidUsdMicros")
    consumed = body.get("includedConsumedUsdMicros")
    card = body.get("card")
    if card is not None and card is not True:
        raise ControlError("card must be true (saves a default card)")
    return (
        None if prepaid is None else parse_integer(prepaid, "prepaidUsdMicros"),
        None
        if consumed is None
        else parse_integer(consumed, "includedConsumedUsdMicros", minimum=0),
        bool(card),
    )


async def billing_customer(request: Request) -> Response:
    """GET / PUT ``{prepaidUsdMicros?, includedConsumedUsdMicros?, card?: true}``: test
    set-up of one end user's (merchant) or the owner's (owner_rollup) customer, as
    pymthouse's admin grants would. A negative prepaid is unbilled overage debt;
    ``includedConsumedUsdMicros`` is this month's included usage already used."""
    state = get_state(request)
    book = state.billing
    customer = book.customer(book.customer_key(request.path_params["ext"]))
    if request.method == "PUT":
        try:
            prepaid, consumed, card = _parse_customer(await _json_object(request))
        except (ControlError, ConfigError) as exc:
            return _bad_request(str(exc))
        if consumed is not None:
            book.set_included_consumed(customer, consumed, datetime.now(UTC))
        if prepaid is not None:
            customer.lifetime_granted_usd_micros += prepaid - customer.prepaid_usd_micros
            customer.prepaid_usd_micros = prepaid
        if card:
            book.save_card(customer)
    now = datetime.now(UTC)
    return json_response(
        {
            "customer": customer.key,
            "prepaidUsdMicros": str(customer.prepaid_usd_micros),
            "lifetimeGrantedUsdMicros": str(customer.lifetime_granted_usd_micros),
            "includedRemainingUsdMicros": str(book.included_remaining(customer, now)),
            "spendableUsdMicros": str(book.spendable(customer, now)),
            "defaultPaymentMethod": customer.default_card_id,
            "planId": book.live_plan(customer).id,
            "grantKeys": sorted(customer.grant_keys),
        }
    )


def _loopback_only(endpoint: Any) -> Any:
    async def guarded(request: Request) -> Response:
        if not _is_loopback(request):
            return json_response({"error": "control API is loopback-only"}, 403)
        response: Response = await endpoint(request)
        return response

    return guarded


routes = [
    Route("/__sandbox/reset", _loopback_only(reset), methods=["POST"]),
    Route("/__sandbox/users", _loopback_only(list_users), methods=["GET"]),
    Route("/__sandbox/users/{ext:path}/balance", _loopback_only(set_balance), methods=["PUT"]),
    Route("/__sandbox/faults", _loopback_only(faults), methods=["GET", "POST", "DELETE"]),
    Route("/__sandbox/config", _loopback_only(config), methods=["GET", "PUT"]),
    Route("/__sandbox/runners", _loopback_only(runners), methods=["GET", "POST"]),
    Route(
        "/__sandbox/runners/{runner_id}",
        _loopback_only(runner_detail),
        methods=["PUT", "DELETE"],
    ),
    Route("/__sandbox/requests", _loopback_only(requests_log), methods=["GET", "DELETE"]),
    Route("/__sandbox/events", _loopback_only(events), methods=["GET"]),
    Route("/__sandbox/billing", _loopback_only(billing), methods=["GET", "PUT"]),
    Route("/__sandbox/billing/plans", _loopback_only(billing_plans), methods=["POST"]),
    Route(
        "/__sandbox/billing/customers/{ext:path}",
        _loopback_only(billing_customer),
        methods=["GET", "PUT"],
    ),
    *(
        Route(route.path, _loopback_only(route.endpoint), methods=sorted(route.methods or ()))
        for route in usage_seed.routes
    ),
    Route("/__sandbox/oidc/identities", _loopback_only(oidc_identities), methods=["GET", "POST"]),
    Route(
        "/__sandbox/oidc/misbehave",
        _loopback_only(oidc_misbehave),
        methods=["GET", "PUT", "DELETE"],
    ),
    Route("/__sandbox/oidc/rotate-key", _loopback_only(oidc_rotate_key), methods=["POST"]),
    Route("/__sandbox/oidc/access-token", _loopback_only(oidc_access_token), methods=["POST"]),
]
