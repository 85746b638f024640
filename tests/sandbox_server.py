"""Start the sandbox (``python -m sandbox``) from tests and drive its control API.

Stdlib only (no Django, no requests) so settings modules can import ``free_port``
cheaply. Usage::

    process = SandboxProcess(port=free_port())
    process.start()
    control = SandboxControl(process.url)
    control.reset()
    control.set_balance("user-1", 0)
    fault_id = control.add_fault("POST", "/api/v1/oidc/token", status=503, times=1)
    ...
    process.stop()
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.child_process import ChildProcess, ChildProcessError

# Never route loopback calls through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Inherited variables that would point the child somewhere other than this port.
_LOCATION_VARIABLES = ("SANDBOX_HOST", "SANDBOX_PORT", "SANDBOX_PUBLIC_URL")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SandboxError(RuntimeError):
    pass


class SandboxProcess:
    """The sandbox as a child process on 127.0.0.1:``port``."""

    def __init__(self, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.env = dict(env or {})
        self.url = f"http://127.0.0.1:{port}"
        self._child: ChildProcess | None = None

    def start(self, timeout: float = 20) -> None:
        """Spawn ``python -m sandbox --port N`` and wait until /api/v1/health answers 200."""
        if self._child is not None:
            raise SandboxError("sandbox already started")
        inherited = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARIABLES}
        environment = {**inherited, **self.env}
        environment.setdefault("SANDBOX_LOG_LEVEL", "warning")
        child = ChildProcess(
            [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(self.port)],
            what="sandbox",
            env=environment,
        )
        try:
            child.start(lambda: url_answers_200(f"{self.url}/api/v1/health"), timeout=timeout)
        except ChildProcessError as exc:
            raise SandboxError(str(exc)) from exc
        self._child = child

    def stderr(self) -> str:
        """What the sandbox wrote (its standard output and error)."""
        return self._child.output() if self._child is not None else ""

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        self._child = None

    def __enter__(self) -> SandboxProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def url_answers_200(url: str) -> bool:
    """True when ``GET url`` answers 200 (loopback, no proxy)."""
    try:
        with _OPENER.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class SandboxControl:
    """Client of the sandbox's ``/__sandbox/`` control API."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/__sandbox{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with _OPENER.open(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise SandboxError(f"{method} /__sandbox{path} -> {exc.code}: {detail}") from exc

    def reset(self) -> None:
        self._call("POST", "/reset")

    def set_balance(self, external_user_id: str, usd_micros: int) -> dict[str, Any]:
        path = f"/users/{urllib.parse.quote(external_user_id, safe='')}/balance"
        result: dict[str, Any] = self._call("PUT", path, {"balanceUsdMicros": str(usd_micros)})
        return result

    def add_fault(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float | None = None,
        drop: bool = False,
        times: int | None = None,
        answer_lost: str | None = None,
    ) -> str:
        """``answer_lost`` ("stall" / "drop"): serve the request, then lose the answer."""
        spec: dict[str, Any] = {"method": method, "path": path, "drop": drop}
        for key, value in (
            ("answerLost", answer_lost),
            ("status", status),
            ("body", body),
            ("headers", headers),
            ("delay", delay),
            ("times", times),
        ):
            if value is not None:
                spec[key] = value
        fault_id: str = self._call("POST", "/faults", spec)["id"]
        return fault_id

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_config(self, **kwargs: Any) -> dict[str, Any]:
        """camelCase keys, e.g. ``set_config(usageLagSeconds=5, runnerMode="queue")``."""
        result: dict[str, Any] = self._call("PUT", "/config", kwargs)
        return result

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def set_billing(self, **kwargs: Any) -> dict[str, Any]:
        """``set_billing(billingMode="merchant", billingEnabled=True, connectReady=True,
        creditDelaySeconds=0, softNegativeUsdMicros="0")``."""
        result: dict[str, Any] = self._call("PUT", "/billing", kwargs)
        return result

    def billing(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/billing")
        return result

    def add_plan(self, name: str, **fields: Any) -> dict[str, Any]:
        """A plan (PlanV1 back): ``add_plan("Pro", type="subscription", priceUsdMicros=...)``."""
        result: dict[str, Any] = self._call("POST", "/billing/plans", {"name": name, **fields})
        return result

    def billing_customer(self, external_user_id: str, **changes: Any) -> dict[str, Any]:
        """The payer customer of ``external_user_id``; ``prepaidUsdMicros=…``, ``card=True``."""
        path = f"/billing/customers/{urllib.parse.quote(external_user_id, safe='')}"
        result: dict[str, Any] = self._call("PUT" if changes else "GET", path, changes or None)
        return result

    def runners(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/runners")
        return result

    def set_runner(self, runner_id: str, **changes: Any) -> dict[str, Any]:
        """camelCase keys: ``unit``, ``price`` (wei, int or str), ``capacity``, ``appFault``…"""
        path = f"/runners/{urllib.parse.quote(runner_id, safe='')}"
        result: dict[str, Any] = self._call("PUT", path, changes)
        return result

    def add_runner(self, runner_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/runners", {"id": runner_id, **fields})
        return result

    def remove_runner(self, runner_id: str) -> None:
        self._call("DELETE", f"/runners/{urllib.parse.quote(runner_id, safe='')}")

    def users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/users")
        return result

    def events(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/events")
        return result

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        query = "" if path is None else "?" + urllib.parse.urlencode({"path": path})
        result: list[dict[str, Any]] = self._call("GET", f"/requests{query}")
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def seed_usage(
        self, rows: list[dict[str, Any]] | None = None, *, generate: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Metered usage without running inference (``sandbox/pymthouse/usage_seed.py``)."""
        body: dict[str, Any] = {}
        if rows is not None:
            body["rows"] = rows
        if generate is not None:
            body["generate"] = generate
        result: dict[str, Any] = self._call("POST", "/usage/seed", body)
        return result

    def oidc_identities(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/oidc/identities")
        return result

    def add_oidc_identity(self, email: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/oidc/identities", {"email": email, **fields})
        return result

    def oidc_misbehave(
        self, id_token: str | None, *, times: int | None = None, **extra: Any
    ) -> None:
        body: dict[str, Any] = {"idToken": id_token, **extra}
        if times is not None:
            body["times"] = times
        self._call("PUT", "/oidc/misbehave", body)

    def oidc_access_token(self, sub: str, **claims: Any) -> str:
        """A signed web-flow access token for ``sub``; ``claims`` override (None removes)."""
        result = self._call("POST", "/oidc/access-token", {"sub": sub, "claims": claims})
        token: str = result["access_token"]
        return token

    def rotate_oidc_key(self, *, keep_old: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/oidc/rotate-key", {"keepOld": keep_old})
        return result
