"""One request to pymthouse: send, map failures to the error tree, parse, log.

Logging: method, path (never the query string), status, elapsed ms and correlation id.
Never headers, never bodies, never the ``auth`` object.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, ValidationError
from requests.auth import AuthBase
from urllib3.exceptions import ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from integrations.pymthouse.errors import (
    PymthouseConfigurationError,
    PymthouseError,
    PymthouseProtocolError,
    PymthouseTimeoutError,
    PymthouseUnavailableError,
    describe,
    error_from_response,
)
from integrations.pymthouse.session import PymthouseSession
from integrations.pymthouse.types import SecretToken

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
#: Bytes read per chunk of a streamed answer.
_STREAM_CHUNK = 1 << 16


class ClientSecretBasic(AuthBase):
    """HTTP Basic for a confidential client (RFC 6749 §2.3.1: form-encode, then base64)."""

    def __init__(self, client_id: str, client_secret: SecretToken) -> None:
        self.client_id = client_id
        self._client_secret = client_secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret.reveal(), safe='')}"
        request.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return request

    def __repr__(self) -> str:
        return f"ClientSecretBasic(client_id={self.client_id!r}, client_secret=****)"


class BearerAuth(AuthBase):
    def __init__(self, token: SecretToken) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return request

    def __repr__(self) -> str:
        return f"BearerAuth({self._token!r})"


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"JSON constant {name} is not allowed")


def _is_read_timeout(exc: requests.ConnectionError) -> bool:
    # requests reports a read timeout *while streaming the body* as ConnectionError.
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, (ReadTimeoutError, Urllib3TimeoutError))


class Transport:
    """Sends one request and returns ``(status, JSON object)`` or raises ``PymthouseError``."""

    def __init__(self, session: PymthouseSession) -> None:
        self.session = session

    def request_json(
        self,
        method: str,
        url: str,
        *,
        auth: AuthBase | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] = (200,),
        not_found_is_auth: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        path = urlsplit(url).path
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=form,
                auth=auth,
                headers=dict(headers) if headers else None,
            )
        except requests.Timeout as exc:
            self._fail(method, path, started, "timed out", PymthouseTimeoutError, exc)
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                self._fail(method, path, started, "timed out", PymthouseTimeoutError, exc)
            self._fail(method, path, started, "connection failed", PymthouseUnavailableError, exc)
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            self._fail(method, path, started, "invalid URL", PymthouseConfigurationError, exc)
        except requests.RequestException as exc:
            self._fail(method, path, started, "transport error", PymthouseUnavailableError, exc)
        elapsed_ms = (time.monotonic() - started) * 1000
        status = response.status_code
        if status not in expected:
            error = error_from_response(
                response, method=method, path=path, not_found_is_auth=not_found_is_auth
            )
            logger.log(
                logging.WARNING if error.retryable else logging.INFO,
                "pymthouse %s %s -> %s %s in %.0f ms (correlation_id=%s)",
                method,
                path,
                status,
                error.code or "",
                elapsed_ms,
                error.correlation_id,
            )
            raise error
        try:
            payload = json.loads(
                response.content, parse_float=Decimal, parse_constant=_reject_constant
            )
        except ValueError as exc:
            raise PymthouseProtocolError(
                describe(method=method, path=path, status=status, detail="body is not JSON"),
                status=status,
                method=method,
                path=path,
            ) from exc
        if not isinstance(payload, dict):
            raise PymthouseProtocolError(
                describe(method=method, path=path, status=status, detail="body is not an object"),
                status=status,
                method=method,
                path=path,
            )
        correlation_id = payload.get("correlation_id") or response.headers.get("X-Correlation-Id")
        logger.debug(
            "pymthouse %s %s -> %s in %.0f ms (correlation_id=%s)",
            method,
            path,
            status,
            elapsed_ms,
            correlation_id,
        )
        return status, payload

    @contextmanager
    def request_stream(
        self,
        method: str,
        url: str,
        *,
        auth: AuthBase | None = None,
        params: Mapping[str, str] | None = None,
        not_found_is_auth: bool = False,
    ) -> Iterator[Iterator[bytes]]:
        """A 200 answer's body as chunks, read while the caller consumes them (a large
        JSON answer is never held whole); any other status raises as ``request_json``.
        A timeout or broken connection *while* streaming is raised from the iterator."""
        path = urlsplit(url).path
        started = time.monotonic()
        try:
            response = self.session.request(method, url, params=params, auth=auth, stream=True)
        except requests.Timeout as exc:
            self._fail(method, path, started, "timed out", PymthouseTimeoutError, exc)
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                self._fail(method, path, started, "timed out", PymthouseTimeoutError, exc)
            self._fail(method, path, started, "connection failed", PymthouseUnavailableError, exc)
        except requests.RequestException as exc:
            self._fail(method, path, started, "transport error", PymthouseUnavailableError, exc)
        with response:
            if response.status_code != 200:
                error = error_from_response(
                    response, method=method, path=path, not_found_is_auth=not_found_is_auth
                )
                logger.log(
                    logging.WARNING if error.retryable else logging.INFO,
                    "pymthouse %s %s -> %s %s in %.0f ms (correlation_id=%s)",
                    method,
                    path,
                    response.status_code,
                    error.code or "",
                    (time.monotonic() - started) * 1000,
                    error.correlation_id,
                )
                raise error

            def chunks() -> Iterator[bytes]:
                try:
                    yield from response.iter_content(chunk_size=_STREAM_CHUNK)
                except requests.ConnectionError as exc:
                    what = "timed out" if _is_read_timeout(exc) else "connection failed"
                    error_class = (
                        PymthouseTimeoutError
                        if _is_read_timeout(exc)
                        else PymthouseUnavailableError
                    )
                    self._fail(method, path, started, what, error_class, exc)
                except requests.RequestException as exc:
                    self._fail(
                        method, path, started, "transport error", PymthouseUnavailableError, exc
                    )

            yield chunks()
            logger.debug(
                "pymthouse %s %s -> 200 streamed in %.0f ms",
                method,
                path,
                (time.monotonic() - started) * 1000,
            )

    @staticmethod
    def _fail(
        method: str,
        path: str,
        started: float,
        what: str,
        error_class: type[PymthouseError],
        exc: Exception,
    ) -> NoReturn:
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.warning(
            "pymthouse %s %s -> %s after %.0f ms (%s)",
            method,
            path,
            what,
            elapsed_ms,
            type(exc).__name__,
        )
        raise error_class(
            describe(method=method, path=path, status=None, detail=what),
            method=method,
            path=path,
        ) from exc


def parse_model(model: type[ModelT], payload: object, *, method: str, path: str) -> ModelT:
    """Validate ``payload`` into ``model``; a mismatch is a ``PymthouseProtocolError``."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise PymthouseProtocolError(
            describe(method=method, path=path, status=None, detail=f"invalid body ({problems})"),
            method=method,
            path=path,
        ) from exc
