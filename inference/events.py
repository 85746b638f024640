"""A generation's state changes, pushed to the pages and API clients that watch it.

Publishing: every transition in ``inference.services.transitions`` calls
:func:`generation_changed` with the new ``(status, stage)``; the message goes out after
the transaction that wrote it commits (``transaction.on_commit``), so a watcher never
sees a state that was rolled back.

Two transports, chosen by settings:

* ``REDIS_URL`` set: Redis pub/sub on one channel, :data:`CHANNEL` (every web process
  receives every transition and keeps the ones its watchers asked for). Each
  transition is delivered, in order. Pub/sub is fire-and-forget (a message sent while
  a subscriber reconnects is lost), so the watcher also re-reads its rows every
  :data:`REDIS_RESYNC_SECONDS`.
* otherwise (the embedded defaults): nothing is published; the watcher reads the
  watched rows' ``status, stage`` every ``INFERENCE_STREAM_POLL_SECONDS``, one query
  for all watchers of a process. Stages shorter than that interval may be skipped: a
  watcher always sees the latest state and always the final one.

Watching: :func:`watch` (async) is used by the event-stream and long-poll endpoints
(``inference.api``). One :class:`_Hub` per event loop holds the process's single
subscription (or its single poll) for every watcher and stops when the last one
leaves, so an open stream costs a queue and a coroutine, no thread and no connection.

A state is named by its *token* ``"<status>/<stage>"`` (``GenerationOut.state``):
what a client passes back as ``since`` and what the event stream sends as each
event's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction

from inference.models import FINISHED_STATUSES, Generation, GenerationStage, GenerationStatus

logger = logging.getLogger(__name__)

#: The Redis pub/sub channel every transition is published on.
CHANNEL = "pixelhouse:generation-events"
#: With Redis, how often watched rows are also re-read (pub/sub may lose a message).
REDIS_RESYNC_SECONDS = 5.0
#: The state of a generation that no longer exists (deleted).
GONE = "gone"


@dataclass(frozen=True, slots=True)
class GenerationState:
    """What a watcher is told: the generation, its status and stage (or that it is gone)."""

    generation_id: str
    status: str
    stage: str

    @property
    def token(self) -> str:
        return state_token(self.status, self.stage)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES or self.status == GONE

    def as_event(self) -> dict[str, Any]:
        """The event stream's ``state`` event (the same keys as ``GenerationOut``)."""
        stage = GenerationStage.of(self.stage)
        progress = stage.progress
        if self.status == GenerationStatus.QUEUED:
            progress = min(progress, 10)
        elif self.status in FINISHED_STATUSES:
            progress = 100
        return {
            "id": self.generation_id,
            "status": self.status,
            "stage": stage.value,
            "stage_label": stage.label,
            "progress": progress,
            "state": self.token,
        }


def state_token(status: str, stage: str) -> str:
    return f"{status}/{stage}"


# --- publishing -------------------------------------------------------------------


def generation_changed(*, generation_id: uuid.UUID | str, status: str, stage: str) -> None:
    """Tell watchers the generation is now at ``(status, stage)``, once this commits.

    Without Redis this does nothing (watchers read the row). A Redis error is logged,
    never raised: the worker's transition is already durable and watchers re-read.
    """
    if not settings.REDIS_URL:
        return
    message = json.dumps({"id": str(generation_id), "status": status, "stage": stage})
    transaction.on_commit(lambda: _redis_publish(message))


_publisher: Any = None


def _redis_publish(message: str) -> None:
    global _publisher
    import redis

    try:
        if _publisher is None:
            _publisher = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2
            )
        _publisher.publish(CHANNEL, message)
    except redis.RedisError:
        logger.warning("generation events: publish failed; watchers re-read", exc_info=True)


# --- reading ----------------------------------------------------------------------


def _states_read(generation_ids: list[str]) -> dict[str, GenerationState]:
    """The current state of each id that exists (one query)."""
    rows = Generation.objects.filter(pk__in=generation_ids).values_list("pk", "status", "stage")
    return {str(pk): GenerationState(str(pk), status, stage) for pk, status, stage in rows}


def _states_read_resilient(generation_ids: list[str]) -> dict[str, GenerationState] | None:
    """:func:`_states_read`, or None when the database is unreachable (try again later)."""
    from django.db import DatabaseError

    try:
        return _states_read(generation_ids)
    except DatabaseError:
        logger.warning("generation events: state read failed", exc_info=True)
        close_old_connections()
        return None


# --- watching ---------------------------------------------------------------------


class Watcher:
    """One watcher of one generation: the states it has not seen yet, deduplicated."""

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        self.last_token: str | None = None
        self.queue: asyncio.Queue[GenerationState] = asyncio.Queue()

    def offer(self, state: GenerationState, *, reread: bool = False) -> None:
        """Queue ``state`` unless the watcher has it already. A re-read of the row
        (``reread``) never moves the watcher back to an earlier stage of the same status:
        some stages are published without a row write (``saving``), so the row may be
        behind the last message; messages themselves arrive in order and always count
        (a payment released goes back from ``paying`` to ``connecting``)."""
        if state.token == self.last_token:
            return
        if reread and self.last_token is not None and _behind(state, self.last_token):
            return
        self.last_token = state.token
        self.queue.put_nowait(state)

    def seen(self, token: str) -> None:
        """The state the watcher read itself, at the start: what was offered before the
        read is dropped (a transition racing the read itself is coalesced into the next
        state, or caught by the next re-read)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.last_token = token

    async def next(self, timeout: float) -> GenerationState | None:
        """The next new state, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


def _behind(state: GenerationState, token: str) -> bool:
    """Is ``state`` an earlier stage of the same status as the state named ``token``?"""
    return token_behind(state.token, token)


def token_behind(token: str, than: str) -> bool:
    """Is the state ``token`` an earlier stage of the same status as the state ``than``?"""
    status, _, stage = token.partition("/")
    than_status, _, than_stage = than.partition("/")
    if not than or status != than_status:
        return False
    return GenerationStage.of(stage).order < GenerationStage.of(than_stage).order


class _Hub:
    """The watchers of one event loop and the one task that feeds them."""

    def __init__(self) -> None:
        self.watchers: dict[str, set[Watcher]] = {}
        # Messages received per watched generation: a re-read that a message overtook
        # is older than that message and is not offered.
        self.messages: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def add(self, watcher: Watcher) -> None:
        self.watchers.setdefault(watcher.generation_id, set()).add(watcher)
        if self.task is None:
            self.ready = asyncio.Event()
            # A fresh context: the task outlives the request that started it, so its
            # database reads must not run in that request's thread (asgiref's
            # ThreadSensitiveContext); they share asgiref's one thread instead.
            self.task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )

    def remove(self, watcher: Watcher) -> None:
        group = self.watchers.get(watcher.generation_id)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self.watchers[watcher.generation_id]
                self.messages.pop(watcher.generation_id, None)

    def deliver(self, state: GenerationState, *, reread: bool = False) -> None:
        for watcher in list(self.watchers.get(state.generation_id, ())):
            watcher.offer(state, reread=reread)

    def message(self, state: GenerationState) -> None:
        if state.generation_id in self.watchers:
            self.messages[state.generation_id] = self.messages.get(state.generation_id, 0) + 1
            self.deliver(state)

    async def resync(self) -> None:
        """Read every watched row once and offer its state (a missing row is gone),
        unless a message about it arrived during the read (it is newer)."""
        ids = list(self.watchers)
        if not ids:
            return
        counts = {generation_id: self.messages.get(generation_id, 0) for generation_id in ids}
        states = await sync_to_async(_states_read_resilient)(ids)
        if states is None:
            return
        for generation_id in ids:
            if self.messages.get(generation_id, 0) != counts[generation_id]:
                continue
            self.deliver(
                states.get(generation_id) or GenerationState(generation_id, GONE, ""), reread=True
            )

    def _detach(self) -> None:
        """The task is leaving: the next watcher starts a new one (said before any await)."""
        if self.task is asyncio.current_task():
            self.task = None

    async def _run(self) -> None:
        try:
            while self.watchers:
                try:
                    if settings.REDIS_URL:
                        await self._run_redis()
                    else:
                        await self._run_polling()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("generation events: the watcher task failed; restarting")
                    self.ready.set()
                    await asyncio.sleep(1.0)
        finally:
            self._detach()
            self.ready.set()

    async def _run_polling(self) -> None:
        self.ready.set()
        interval = settings.INFERENCE_STREAM_POLL_SECONDS
        while self.watchers:
            await self.resync()
            await asyncio.sleep(interval)

    async def _run_redis(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=1, health_check_interval=30
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            while self.watchers:
                try:
                    await pubsub.subscribe(CHANNEL)
                    self.ready.set()
                    await self._listen(pubsub)
                except (aioredis.RedisError, OSError):
                    logger.warning("generation events: Redis subscription lost", exc_info=True)
                    self.ready.set()
                    await self.resync()
                    await asyncio.sleep(1.0)
        finally:
            if not self.watchers:
                self._detach()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time()  # at once: what was published while not subscribed
        while self.watchers:
            message = await pubsub.get_message(timeout=0.5)
            if message is not None and message.get("type") == "message":
                state = _parse(message.get("data"))
                if state is not None:
                    self.message(state)
            if loop.time() >= next_resync:
                await self.resync()
                next_resync = loop.time() + REDIS_RESYNC_SECONDS


def _parse(data: Any) -> GenerationState | None:
    try:
        fields = json.loads(data)
        return GenerationState(str(fields["id"]), str(fields["status"]), str(fields["stage"]))
    except (TypeError, ValueError, KeyError):
        logger.warning("generation events: unreadable message dropped")
        return None


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = weakref.WeakKeyDictionary()


def _hub() -> _Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = _Hub()
    return hub


@contextlib.asynccontextmanager
async def watch(generation_id: uuid.UUID | str) -> AsyncIterator[Watcher]:
    """Watch one generation for as long as the block runs.

    The subscription is live when the block starts: read the row inside the block
    (then call ``watcher.seen(token)``) and no transition after that read is missed.
    """
    hub = _hub()
    watcher = Watcher(str(generation_id))
    hub.add(watcher)
    try:
        await hub.ready.wait()
        yield watcher
    finally:
        hub.remove(watcher)
