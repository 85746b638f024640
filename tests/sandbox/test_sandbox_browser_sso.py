"""The sandbox as an OpenID provider for browser sign-in (docs/identity.md)."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

import jwt
import pytest
import requests

from tests.sandbox_server import SandboxControl

WEB_ID = "web_b50c8e3d43c6d3641cae2e66"
WEB_SECRET = "pmth_cs_5f0c1b7e2a9d4c6b8e3f1a0d7c5b9e2f4a6c8d0b1e3f5a7c9d2b4f6e8a0c1d3e"
REDIRECT = "http://127.0.0.1:9/accounts/oidc/pymthouse/login/callback/"
VERIFIER = "v" * 64
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


def _authorize(http: requests.Session, base: str, **overrides: str) -> requests.Response:
    params = {
        "client_id": WEB_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "st",
        "nonce": "nc",
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
        **overrides,
    }
    params = {k: v for k, v in params.items() if v != ""}
    return http.get(f"{base}/api/v1/oidc/auth", params=params, allow_redirects=False)


def _code(http: requests.Session, base: str, email: str = "ada@sandbox.pymthouse.test", **kw):
    page = _authorize(http, base, **kw)
    assert page.status_code == 303
    interaction = urllib.parse.urljoin(base, page.headers["Location"])
    assert page.headers["Location"].startswith("/oidc/interaction?uid=")
    answer = http.post(interaction, data={"email": email}, allow_redirects=False)
    assert answer.status_code == 303
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query))
    assert answer.headers["Location"].startswith(REDIRECT)
    return query


def _exchange(http, base, code: str, verifier: str | None = VERIFIER, auth=(WEB_ID, WEB_SECRET)):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    return http.post(f"{base}/api/v1/oidc/token", data=data, auth=auth)


def test_code_flow_issues_rs256_id_token_and_access_token(
    http: requests.Session, base: str, control: SandboxControl
) -> None:
    query = _code(http, base)
    assert query["state"] == "st"
    assert query["iss"] == f"{base}/api/v1/oidc"
    response = _exchange(http, base, query["code"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert sorted(body) == [
        "access_token",
        "expires_in",
        "id_token",
        "refresh_token",
        "scope",
        "token_type",
    ]
    jwks = http.get(f"{base}/api/v1/oidc/jwks").json()
    key = jwt.PyJWK(jwks["keys"][0])
    issuer = f"{base}/api/v1/oidc"
    id_claims = jwt.decode(body["id_token"], key, algorithms=["RS256"], audience=WEB_ID)
    ada = next(i for i in control.oidc_identities() if i["email"].startswith("ada@"))
    assert id_claims["iss"] == issuer
    assert id_claims["sub"] == ada["sub"]
    assert id_claims["nonce"] == "nc"
    assert id_claims["email_verified"] is True
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    access = jwt.decode(body["access_token"], key, algorithms=["RS256"], audience=issuer)
    assert access["client_id"] == WEB_ID
    # pymthouse's userinfo refuses its own access token (observed), unless told to serve.
    me = http.get(
        f"{base}/api/v1/oidc/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 401
    control.oidc_misbehave(None, userinfo="serve")
    me = http.get(
        f"{base}/api/v1/oidc/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["email"] == "ada@sandbox.pymthouse.test"


def test_code_is_single_use_and_bound_to_the_verifier(http, base) -> None:
    code = _code(http, base)["code"]
    assert _exchange(http, base, code, verifier="w" * 64).json()["error"] == "invalid_grant"
    assert _exchange(http, base, code).json()["error"] == "invalid_grant"  # burnt by the try
    code = _code(http, base)["code"]
    assert _exchange(http, base, code).status_code == 200
    replay = _exchange(http, base, code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_401(http, base) -> None:
    code = _code(http, base)["code"]
    assert _exchange(http, base, code, auth=(WEB_ID, "pmth_cs_wrong")).status_code == 401


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "email"}, "invalid_request"),
    ],
)
def test_bad_authorization_requests_are_sent_back_with_an_error(
    http, base, overrides, error
) -> None:
    response = _authorize(http, base, **overrides)
    assert response.status_code == 303
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(response.headers["Location"]).query))
    assert query["error"] == error
    assert query["state"] == "st"


def test_unknown_client_or_redirect_is_refused_without_redirect(http, base) -> None:
    assert _authorize(http, base, client_id="web_000000000000000000000000").status_code == 400
    assert _authorize(http, base, redirect_uri="https://evil.example/cb").status_code == 400


def test_without_pkce_is_accepted_like_pymthouse(http, base) -> None:
    code = _code(http, base, code_challenge="", code_challenge_method="")["code"]
    assert _exchange(http, base, code, verifier=None).status_code == 200


def test_rotation_publishes_the_new_key_first_and_keeps_the_old(http, base, control) -> None:
    old = http.get(f"{base}/api/v1/oidc/jwks").json()["keys"]
    rotated = control.rotate_oidc_key(keep_old=True)
    keys = http.get(f"{base}/api/v1/oidc/jwks").json()["keys"]
    assert [k["kid"] for k in keys] == [rotated["kid"], old[0]["kid"]]
    body = _exchange(http, base, _code(http, base)["code"]).json()
    assert jwt.get_unverified_header(body["id_token"])["kid"] == rotated["kid"]


def test_misbehaviour_applies_the_given_number_of_times(http, base, control) -> None:
    control.oidc_misbehave("alg_none", times=1)
    first = _exchange(http, base, _code(http, base)["code"]).json()["id_token"]
    second = _exchange(http, base, _code(http, base)["code"]).json()["id_token"]
    assert jwt.get_unverified_header(first)["alg"] == "none"
    assert jwt.get_unverified_header(second)["alg"] == "RS256"


def test_end_session_redirects_only_to_allowed_uris(http, base) -> None:
    back = http.get(
        f"{base}/api/v1/oidc/session/end",
        params={"post_logout_redirect_uri": "http://127.0.0.1:9/", "state": "x"},
        allow_redirects=False,
    )
    assert back.status_code == 303
    assert back.headers["Location"] == "http://127.0.0.1:9/?state=x"
    away = http.get(
        f"{base}/api/v1/oidc/session/end",
        params={"post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
    )
    assert away.status_code == 200
