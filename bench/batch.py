"""Running N generations through any client at a fixed concurrency (closed loop)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from bench.stats import RunResult, Sample


class GenerationFailedError(RuntimeError):
    pass


class ImageClient(Protocol):
    def generate(self, index: int) -> Sample: ...


def run_batch(
    client: ImageClient,
    *,
    count: int,
    concurrency: int,
    runner_latency: float,
    label: str,
    first_index: int = 0,
) -> RunResult:
    """``count`` generations with at most ``concurrency`` in flight.

    Each thread starts the next generation as soon as its previous one finished, so the
    load is the same for every client; the wall clock spans the whole batch. Every
    failure is collected and reported, not just the first.
    """
    started = time.monotonic()
    samples: list[Sample] = []
    failures: list[str] = []
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=label)
    try:
        futures = [pool.submit(client.generate, first_index + index) for index in range(count)]
        for future in futures:
            try:
                samples.append(future.result())
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): drop the queued generations so the stack's
        # cleanup runs now; the few in flight fail once the stack is gone.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    wall = time.monotonic() - started
    if failures:
        raise GenerationFailedError(
            f"{len(failures)} of {count} {label} generations failed:\n  " + "\n  ".join(failures)
        )
    return RunResult(label=label, samples=samples, wall_seconds=wall, runner_latency=runner_latency)
