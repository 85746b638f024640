"""Drive the browser SSO flow with Django's test client against the sandbox OP (loopback)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import requests
from django.test import Client

LOGIN_PATH = "/accounts/oidc/pymthouse/login/"
CALLBACK_PATH = "/accounts/oidc/pymthouse/login/callback/"


@dataclass
class Authorization:
    """The authorization request our site sent and the callback the OP answered with."""

    authorize_url: str
    params: dict[str, str]
    callback: str  # path + query, as the browser would follow it


def start(client: Client, *, next_url: str | None = None) -> tuple[str, dict[str, str]]:
    data = {"next": next_url} if next_url else {}
    response = client.post(LOGIN_PATH, data)
    assert response.status_code == 302, response.content[:500]
    url = response["Location"]
    return url, dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def pick_identity(url: str, email: str) -> str:
    """Follow an authorization URL at the sandbox, pick ``email``; the callback path + query."""
    with requests.Session() as browser:
        browser.trust_env = False
        page = browser.get(url, allow_redirects=False, timeout=10)
        assert page.status_code == 303, page.text[:300]
        interaction = urllib.parse.urljoin(url, page.headers["Location"])
        form = browser.get(interaction, timeout=10)
        assert form.status_code == 200
        assert email in form.text
        answer = browser.post(interaction, data={"email": email}, allow_redirects=False, timeout=10)
    assert answer.status_code == 303, answer.text[:300]
    parts = urllib.parse.urlsplit(answer.headers["Location"])
    return f"{parts.path}?{parts.query}"


def authorize(client: Client, *, email: str, next_url: str | None = None) -> Authorization:
    """Start SSO on our site, pick ``email`` on the sandbox's page; return the callback."""
    url, params = start(client, next_url=next_url)
    callback = pick_identity(url, email)
    assert callback.startswith(CALLBACK_PATH + "?")
    return Authorization(url, params, callback)


def finish(client: Client, authorization: Authorization):  # type: ignore[no-untyped-def]
    return client.get(authorization.callback)


def code_flow_tokens(sandbox_url: str, email: str) -> dict[str, str]:
    """Act as a relying party at the sandbox OP directly: the token response for ``email``."""
    import base64
    import hashlib
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect_uri = "http://127.0.0.1/callback"
    params = {
        "client_id": WEB_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "openid email profile",
        "state": "s",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with requests.Session() as browser:
        browser.trust_env = False
        page = browser.get(
            f"{sandbox_url}/api/v1/oidc/auth", params=params, allow_redirects=False, timeout=10
        )
        interaction = urllib.parse.urljoin(sandbox_url, page.headers["Location"])
        answer = browser.post(interaction, data={"email": email}, allow_redirects=False, timeout=10)
        query = dict(
            urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query)
        )
        token = browser.post(
            f"{sandbox_url}/api/v1/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(WEB_CLIENT_ID, WEB_CLIENT_SECRET),
            timeout=10,
        )
    assert token.status_code == 200, token.text
    tokens: dict[str, str] = token.json()
    return tokens


WEB_CLIENT_ID = "web_b50c8e3d43c6d3641cae2e66"
WEB_CLIENT_SECRET = "pmth_cs_5f0c1b7e2a9d4c6b8e3f1a0d7c5b9e2f4a6c8d0b1e3f5a7c9d2b4f6e8a0c1d3e"
