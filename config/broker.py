"""The embedded Celery broker: kombu's filesystem transport, made crash-safe.

kombu's stock filesystem transport creates a message file and only then writes
it, and consumers claim files with ``shutil.move`` (a copy when the processed
folder is on another filesystem). A consumer can therefore read a half-written
message — the worker dies with ``JSONDecodeError`` and the message is lost — or
two consumers can copy the same file. Here a producer writes to a hidden temp
file and publishes it with an atomic ``os.replace``; a consumer claims a
message with an atomic ``os.rename`` inside the queue folder, so exactly one
consumer reads each complete message.

Used only on embedded defaults (``CELERY_BROKER_URL=filesystem://``); with
``REDIS_URL`` Celery talks to Redis instead.
"""

from __future__ import annotations

import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class AtomicFilesystemChannel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot keeps the temp file out of every queue's filename match.
        temp = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temp, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add message {name!r} to the queue") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        wanted = f"{queue}.msg"
        folder = self.data_folder_in
        for filename in sorted(os.listdir(folder)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(folder, f".{uuid.uuid4().hex}.claimed")
            try:
                os.rename(os.path.join(folder, filename), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as handle:
                    payload = handle.read()
            finally:
                os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise Empty()


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicFilesystemChannel
