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


def authorize(client: Client, *, email: str, next_url: str | None = None) -> Authorization:
    """Start SSO on our site, pick ``email`` on the sandbox's page; return the callback."""
    url, params = start(client, next_url=next_url)
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
    assert parts.path == CALLBACK_PATH
    return Authorization(url, params, f"{parts.path}?{parts.query}")


def finish(client: Client, authorization: Authorization):  # type: ignore[no-untyped-def]
    return client.get(authorization.callback)
