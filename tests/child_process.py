"""A child process of the test session: spawned, waited for until it answers, stopped.

Stdlib only (``tests/sandbox_server.py`` is imported by settings modules). The servers
the tests start (the sandbox, localstripe, the ASGI web process, Celery workers) share
this: output goes to a file, never a pipe (a chatty child can never block on a full
pipe), an early exit is reported with that output, and ``stop`` terminates, then kills.
With ``process_group`` the child leads its own process group and the signals go to the
whole group (a Celery worker's pool children, uvicorn's reloader-free worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildProcessError(RuntimeError):
    pass


class ChildProcess:
    def __init__(
        self,
        argv: list[str],
        *,
        what: str,
        env: dict[str, str],
        log_path: Path | None = None,
        process_group: bool = False,
        stdout: bool = True,
    ) -> None:
        """``log_path`` keeps the output in that file (else a temporary one, gone at
        ``stop``); ``stdout=False`` keeps only standard error."""
        self.argv = argv
        self.what = what
        self.env = env
        self.log_path = log_path
        self.process_group = process_group
        self.keep_stdout = stdout
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    def start(self, ready: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> None:
        """Spawn the child and return once ``ready()`` is true; raise if it exits first
        or is not ready within ``timeout`` seconds (it is stopped then)."""
        if self.process is not None:
            raise ChildProcessError(f"{self.what} already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._output = self.log_path.open("w+b")
        else:
            self._output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._output if self.keep_stdout else subprocess.DEVNULL,
            stderr=self._output,
            start_new_session=self.process_group,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, output = self.process.returncode, self.output()
                self._close()
                raise ChildProcessError(f"{self.what} exited with code {code}:\n{output}")
            if ready():
                return
            time.sleep(interval)
        output = self.output()
        self.stop()
        raise ChildProcessError(f"{self.what} was not ready within {timeout}s:\n{output}")

    def output(self) -> str:
        """Everything the child wrote so far (standard error, and standard output unless
        it was discarded)."""
        if self.log_path is not None:
            try:
                return self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                return ""
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the child (its whole group with ``process_group``), as a crash would."""
        if self.alive():
            assert self.process is not None
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            assert self.process is not None
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        self.process = None

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        if self.process_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def _close(self) -> None:
        if self._output is not None:
            self._output.close()
        self._output = None
