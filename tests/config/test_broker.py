"""The embedded broker delivers every message exactly once under concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 600

CONSUMER = """
import json, sys
from pathlib import Path
from queue import Empty
from kombu import Connection
folder, out, deadline, produced = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
import time
seen = []
with Connection("filesystem://", transport="config.broker:AtomicFilesystemTransport",
                transport_options={"data_folder_in": folder, "data_folder_out": folder,
                                   "polling_interval": 0}) as conn:
    queue = conn.SimpleQueue("race")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            message = queue.get(block=True, timeout=0.05)
        except Empty:
            # Messages put in the same millisecond are taken in random order (the file
            # name is <ms>_<uuid>), so a "stop" may come before the last messages: once
            # everything is put, drain until the folder is empty (nothing queued, nothing
            # being claimed by another consumer).
            if Path(produced).exists() and not any(Path(folder).iterdir()):
                break
            continue
        seen.append(message.payload["id"])
        message.ack()
Path(out).write_text(json.dumps(seen))
"""


@pytest.mark.parametrize("consumers", [3])
def test_concurrent_consumers_never_lose_or_duplicate_messages(
    tmp_path: Path, settings, consumers: int
) -> None:
    # On the project's disk (not /tmp), as in production use.
    folder = Path(settings.TEST_VAR_DIR) / "broker-race"
    folder.mkdir(parents=True)
    outputs = [tmp_path / f"consumer-{index}.json" for index in range(consumers)]
    produced = tmp_path / "produced"  # written once every message is put
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(folder), str(out), "60", str(produced)],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
        )
        for out in outputs
    ]
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "polling_interval": 0}
    with Connection(
        "filesystem://",
        transport="config.broker:AtomicFilesystemTransport",
        transport_options=options,
    ) as connection:
        queue = connection.SimpleQueue("race")
        for number in range(MESSAGES):
            queue.put({"id": number, "padding": "x" * 65536})
        for _ in range(consumers):
            queue.put({"id": "stop"})
    produced.write_text("done")

    errors = []
    for process in processes:
        _, stderr = process.communicate(timeout=90)
        if process.returncode:
            errors.append(stderr.decode())
    assert errors == []
    received = [item for out in outputs for item in json.loads(out.read_text()) if item != "stop"]
    assert sorted(received) == list(range(MESSAGES))  # every message, each exactly once
    assert [p.name for p in folder.iterdir()] == []  # nothing half-written or half-claimed left


def test_the_project_uses_the_atomic_transport_on_embedded_defaults(settings) -> None:
    if settings.REDIS_URL:
        pytest.skip("this run uses Redis as the broker")
    from config.celery import app

    with app.connection_for_write() as connection:
        assert type(connection.transport).__name__ == "AtomicFilesystemTransport"
