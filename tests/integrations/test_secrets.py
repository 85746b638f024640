"""The client secret, the Basic header and minted tokens never leak.

Every logger runs at DEBUG (root, urllib3, requests, django, integrations) while the
client exercises its success and failure paths; then logs, stdout/stderr, exception
messages, reprs and formatted tracebacks (with their chained causes) are searched.
"""

from __future__ import annotations

import base64
import http.client
import logging
import pickle
import traceback
from typing import Any

import pytest
from django.conf import settings as django_settings

from integrations.pymthouse import (
    PymthouseClient,
    PymthouseConfig,
    PymthouseError,
    SecretToken,
)
from integrations.pymthouse.transport import BearerAuth, ClientSecretBasic
from tests.integrations.conftest import TOKEN_PATH, builder_path
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db

LOGGERS = ("", "urllib3", "urllib3.connectionpool", "requests", "django", "integrations")
WRONG_SECRET = "pmth_cs_" + "9a" * 32


def _basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _failure(call: Any) -> PymthouseError:
    with pytest.raises(PymthouseError) as excinfo:
        call()
    return excinfo.value


def test_secrets_never_appear_in_logs_errors_or_reprs(
    sandbox: SandboxControl,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert http.client.HTTPConnection.debuglevel == 0
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    m2m_id = django_settings.PYMTHOUSE_M2M_CLIENT_ID
    secret = django_settings.PYMTHOUSE_M2M_CLIENT_SECRET
    client = PymthouseClient.from_settings()

    # Success paths: every kind of token the client handles.
    upsert = client.upsert_user(external_user_id="py-user-001", email="a@example.test")
    user_token = client.mint_user_token(external_user_id="py-user-001")
    signer = client.mint_signer_session(external_user_id="py-user-001")
    usage = client.usage(group_by="user")
    assert user_token.refresh_token is not None
    tokens = [
        user_token.access_token.reveal(),
        user_token.refresh_token.reveal(),
        signer.access_token.reveal(),
    ]

    # Failure paths, including ones whose response bodies carry a token.
    sandbox.set_balance("broke", 0)
    failures = [
        _failure(lambda: client.mint_signer_session(external_user_id="broke")),
        _failure(lambda: client.mint_user_token(external_user_id="nobody")),
    ]
    sandbox.add_fault(
        "POST", TOKEN_PATH, status=200,
        body={"access_token": tokens[-1], "token_type": "Bearer", "expires_in": "soon"}, times=1,
    )  # fmt: skip
    failures.append(_failure(lambda: client.mint_signer_session(external_user_id="py-user-001")))
    sandbox.add_fault("GET", builder_path("/usage"), drop=True, times=1)
    failures.append(_failure(client.usage))
    settings.PYMTHOUSE_READ_TIMEOUT = 0.3
    sandbox.add_fault("GET", builder_path("/usage"), delay=1.0, times=1)
    failures.append(_failure(PymthouseClient.from_settings().usage))
    settings.PYMTHOUSE_M2M_CLIENT_SECRET = WRONG_SECRET
    wrong = PymthouseClient.from_settings()
    failures += [
        _failure(lambda: wrong.upsert_user(external_user_id="u-2")),
        _failure(lambda: wrong.mint_user_token(external_user_id="py-user-001")),
        _failure(lambda: wrong.mint_signer_session(external_user_id="py-user-001")),
        _failure(wrong.usage),
    ]
    # What a task would log when it gives up.
    for failure in failures:
        logging.getLogger("tests.integrations").error("pymthouse call failed", exc_info=failure)

    artefacts = [caplog.text, *(record.getMessage() for record in caplog.records)]
    artefacts += [repr(record.args) for record in caplog.records]
    artefacts += [str(record.__dict__) for record in caplog.records]
    captured = capsys.readouterr()
    artefacts += [captured.out, captured.err]
    for failure in failures:
        artefacts += [str(failure), repr(failure), "".join(traceback.format_exception(failure))]
        cause = failure.__cause__
        if cause is not None:
            artefacts += [str(cause), repr(cause)]
    results = (upsert, user_token, signer, usage, client, wrong, client.config)
    artefacts += [repr(result) for result in results] + [str(result) for result in results]
    artefacts += [
        repr(ClientSecretBasic(m2m_id, SecretToken(secret))),
        repr(BearerAuth(signer.access_token)),
    ]

    forbidden = {
        "client secret": secret,
        "wrong client secret": WRONG_SECRET,
        "Basic header value": _basic(m2m_id, secret),
        "wrong Basic header value": _basic(m2m_id, WRONG_SECRET),
        **{f"token {index}": token for index, token in enumerate(tokens)},
    }
    # Only labels in the assertion: a failing run must not print the secrets it found.
    leaked = [label for label, value in forbidden.items() if any(value in a for a in artefacts)]
    assert leaked == []

    # The capture really ran at DEBUG and saw the traffic (paths, statuses).
    assert any(record.name.startswith("urllib3") for record in caplog.records)
    assert any(
        record.name.startswith("integrations.pymthouse") and record.levelno == logging.DEBUG
        for record in caplog.records
    )
    assert "/api/v1/oidc/token -> 200" in caplog.text
    assert http.client.HTTPConnection.debuglevel == 0
    assert captured.out == ""


def test_secret_token_masks_itself_and_refuses_serialisation() -> None:
    raw = "eyJhbGciOiJSUzI1NiJ9.payload.signature-ends-WXYZ"
    token = SecretToken(raw)

    assert str(token) == "****WXYZ"
    assert repr(token) == "SecretToken('****WXYZ')"
    assert f"{token}" == "****WXYZ"
    assert "%s" % token == "****WXYZ"  # noqa: UP031 -- what logging does
    assert token.reveal() == raw
    assert token == SecretToken(raw)
    assert token != SecretToken(raw + "x")
    assert repr(SecretToken("short")) == "SecretToken('****')"
    with pytest.raises(TypeError):
        pickle.dumps(token)
    with pytest.raises(ValueError):
        SecretToken("")


def test_config_repr_hides_the_secret() -> None:
    config = PymthouseConfig.from_settings()

    assert config.m2m_client_secret.reveal() == django_settings.PYMTHOUSE_M2M_CLIENT_SECRET
    assert django_settings.PYMTHOUSE_M2M_CLIENT_SECRET not in repr(config)
    assert django_settings.PYMTHOUSE_M2M_CLIENT_SECRET not in str(config)
