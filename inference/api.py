"""JSON API for generations, mounted at /api/v1/ (django-ninja).

Bearer access tokens (accounts.api_auth) or session auth with CSRF for the
browser. Every read is owner-scoped: another user's generation is a 404.

Watching a generation, three ways (each state named by ``state``, ``"<status>/<stage>"``):

* ``GET /generations/{id}/events``: Server-Sent Events, pushed from the worker's
  transitions (``inference.events``) until the generation finishes;
* ``GET /generations/{id}/next?since=<state>&wait=<seconds>``: a long poll, for clients
  that cannot stream: answers as soon as the state differs from ``since``;
* ``GET /generations/{id}``: a plain read (no write of any kind, not even the session's
  activity: ``config.middleware``).

The first two are async views: under the ASGI server an open one costs a coroutine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema, Status
from ninja.params.functions import Header

from accounts.api_auth import API_AUTH
from billing.selectors import generations_money
from inference import events, selectors, services
from inference.errors import (
    GenerationAdmissionRefusedError,
    GenerationConflictError,
    GenerationRateLimitedError,
    GenerationValidationError,
    IdempotencyKeyError,
    IdempotencyKeyInUseError,
    IdempotencyKeyInvalidError,
)
from inference.models import FINISHED_STATUSES
from inference.resources import GenerationOut, generation_json, generation_out

router = Router(auth=API_AUTH, tags=["generations"])


#: The rules ``generation_create`` enforces, published in the schema below. They are stated
#: (``json_schema_extra``), not enforced by pydantic, so that a refusal is the service's one
#: message per field whichever page or client sent it (tests/inference/test_api_schema.py
#: submits at each limit and one past it).
LIMITS = services.generation_limits()


class GenerationIn(Schema):
    prompt: str = Field(
        description="What to draw; outer whitespace and control characters are removed, "
        "and it must not be blank",
        json_schema_extra={"minLength": 1, "maxLength": LIMITS.max_prompt_length},
    )
    negative_prompt: str = Field(
        "", description="What to avoid", json_schema_extra={"maxLength": LIMITS.max_prompt_length}
    )
    model_id: str = Field(
        LIMITS.default_model,
        description="One of GET /models; default: the first",
        json_schema_extra={"enum": list(LIMITS.models)},
    )
    width: int = Field(
        LIMITS.default_width,
        description="Pixels",
        json_schema_extra={
            "minimum": LIMITS.min_size,
            "maximum": LIMITS.max_size,
            "multipleOf": LIMITS.size_step,
        },
    )
    height: int = Field(
        LIMITS.default_height,
        description="Pixels",
        json_schema_extra={
            "minimum": LIMITS.min_size,
            "maximum": LIMITS.max_size,
            "multipleOf": LIMITS.size_step,
        },
    )
    seed: int | None = Field(
        None,
        description="Same seed, same parameters: the same image; null: random",
        json_schema_extra={"minimum": 0, "maximum": LIMITS.seed_max},
    )


class GenerationPageOut(Schema):
    items: list[GenerationOut]
    count: int
    page: int
    page_size: int
    next_page: int | None
    previous_page: int | None


class PriceOut(Schema):
    model: str
    price_micros: str | None = Field(
        description="The most one image costs you, exact USD micros; null with an allowance"
    )
    price: str = Field(description="What the page shows: '$0.02 per image', 'Free · 18 left…'")
    remaining_this_month: int | None
    affordable: bool = Field(description="Whether the next image would be admitted now")
    refusal: str
    refusal_code: str


class ModelsOut(Schema):
    models: list[str]
    default_model: str
    sizes: list[dict[str, Any]]
    prices: list[PriceOut]
    available_micros: str | None = Field(description="Your available balance (charging plans)")


class MessageOut(Schema):
    detail: str


class RefusedOut(Schema):
    detail: str
    code: str


class InvalidOut(Schema):
    detail: str
    errors: dict[str, str]


def _user_id(request: HttpRequest) -> int:
    return int(request.user.pk)  # type: ignore[arg-type]


IDEMPOTENCY_KEY_DESCRIPTION = (
    "Makes a retry safe (Stripe's semantics): a repeat with the same key and body is answered "
    "with the first response (the same status and body, marked `Idempotent-Replayed: true`) and "
    "makes, holds and charges nothing more; the same key with a different body is a 422; a "
    "repeat while the first is still being processed is a 409. Nothing is saved for a 400 or a "
    "429, so the key may be sent again. Keys are yours alone and are forgotten after 24 hours."
)


@router.post(
    "/generations",
    response={
        201: GenerationOut,
        400: InvalidOut,
        402: RefusedOut,
        409: RefusedOut,
        422: RefusedOut,
        429: MessageOut,
    },
    summary="Queue an image generation",
)
def create_generation(
    request: HttpRequest,
    response: HttpResponse,
    payload: GenerationIn,
    idempotency_key: str | None = Header(
        None, alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DESCRIPTION
    ),
) -> Any:
    arguments = payload.model_dump()
    if idempotency_key is None:
        return _generation_submit(request, response, arguments, claim=None)
    try:
        begun = services.idempotent_request_begin(
            owner_id=_user_id(request),
            key=idempotency_key,
            fingerprint=services.request_fingerprint(arguments),
        )
    except IdempotencyKeyInvalidError as exc:
        return Status(400, {"detail": "Invalid input.", "errors": {"Idempotency-Key": exc.message}})
    except IdempotencyKeyError as exc:
        return Status(exc.status, {"detail": exc.message, "code": exc.code})
    if isinstance(begun, services.IdempotentReplay):
        response["Idempotent-Replayed"] = "true"
        return Status(begun.status, begun.body)
    try:
        return _generation_submit(request, response, arguments, claim=begun)
    except BaseException:
        services.idempotent_request_release(claim=begun)
        raise


def _generation_submit(
    request: HttpRequest,
    response: HttpResponse,
    arguments: dict[str, Any],
    *,
    claim: services.IdempotencyClaim | None,
) -> Any:
    """Create the generation; with a claim, save the response with it (one transaction)."""
    try:
        with transaction.atomic():
            generation = services.generation_create(owner=request.user, **arguments)  # type: ignore[arg-type]
            body = generation_json(generation)
            if claim is not None:
                services.idempotent_request_complete(claim=claim, status=201, body=body)
    except GenerationValidationError as exc:
        _release(claim)
        return Status(400, {"detail": exc.message, "errors": exc.field_errors})
    except GenerationRateLimitedError as exc:
        _release(claim)
        response["Retry-After"] = str(exc.retry_after)
        return Status(429, {"detail": exc.message})
    except GenerationAdmissionRefusedError as exc:
        refused = {"detail": exc.message, "code": exc.code}
        if claim is not None:  # it executed and was refused: that is the answer to repeats
            try:
                services.idempotent_request_complete(claim=claim, status=402, body=refused)
            except IdempotencyKeyInUseError:
                pass  # taken over meanwhile: the request that took it answers the repeats
        return Status(402, refused)
    except IdempotencyKeyInUseError as exc:  # the claim was taken over: nothing was made
        return Status(409, {"detail": exc.message, "code": exc.code})
    return Status(201, body)


def _release(claim: services.IdempotencyClaim | None) -> None:
    if claim is not None:
        services.idempotent_request_release(claim=claim)


@router.get(
    "/generations",
    response={200: GenerationPageOut, 400: MessageOut},
    summary="List your generations",
)
def list_generations(request: HttpRequest, page: int = 1, page_size: int = 20) -> Any:
    page_size = min(max(1, page_size), 100)
    queryset = selectors.generation_list(owner_id=_user_id(request))
    count = queryset.count()
    last_page = max(1, -(-count // page_size))
    if not 1 <= page <= last_page:
        return Status(400, {"detail": f"page must be between 1 and {last_page}."})
    offset = (page - 1) * page_size
    items = list(queryset[offset : offset + page_size])
    money = generations_money(generation_ids=[generation.pk for generation in items])
    return Status(
        200,
        {
            "items": [generation_out(generation, money[generation.pk]) for generation in items],
            "count": count,
            "page": page,
            "page_size": page_size,
            "next_page": page + 1 if offset + page_size < count else None,
            "previous_page": page - 1 if page > 1 else None,
        },
    )


@router.get(
    "/generations/{generation_id}",
    response={200: GenerationOut, 404: MessageOut},
    summary="Get one generation",
)
def get_generation(request: HttpRequest, generation_id: str) -> Any:
    generation = selectors.generation_get(owner_id=_user_id(request), generation_id=generation_id)
    if generation is None:
        return Status(404, {"detail": "Not found."})
    return Status(200, generation_out(generation))


@router.delete(
    "/generations/{generation_id}",
    response={204: None, 404: MessageOut, 409: MessageOut},
    summary="Delete a generation and its image",
)
def delete_generation(request: HttpRequest, generation_id: str) -> Any:
    generation = selectors.generation_get(owner_id=_user_id(request), generation_id=generation_id)
    if generation is None:
        return Status(404, {"detail": "Not found."})
    try:
        services.generation_delete(generation=generation, acting_user=request.user)  # type: ignore[arg-type]
    except GenerationConflictError as exc:
        return Status(409, {"detail": exc.message})
    return Status(204, None)


CANCEL_DESCRIPTION = (
    "Cancels a queued or running generation before its payment: its credit hold is "
    "released in full and nothing reaches the network after it. 409 `already_paid` once "
    "the payment was claimed (a ticket may be spent: it finishes as usual) and 409 "
    "`finished` once it ended; then nothing changes."
)


@router.post(
    "/generations/{generation_id}/cancel",
    response={200: GenerationOut, 404: MessageOut, 409: RefusedOut},
    summary="Cancel a generation before it is paid for",
    description=CANCEL_DESCRIPTION,
)
def cancel_generation(request: HttpRequest, generation_id: str) -> Any:
    generation = selectors.generation_get(owner_id=_user_id(request), generation_id=generation_id)
    if generation is None:
        return Status(404, {"detail": "Not found."})
    try:
        canceled = services.generation_cancel_by_owner(
            generation_id=generation.pk,
            acting_user=request.user,  # type: ignore[arg-type]
        )
    except GenerationConflictError as exc:  # already_paid, finished
        return Status(409, {"detail": exc.message, "code": exc.code})
    return Status(200, generation_out(canceled))


RETRY_DESCRIPTION = (
    "Makes a new generation with the same prompt, negative prompt, model, size and chosen "
    "seed as a failed or canceled one, admitted like any submission (priced, held, "
    "rate-limited: the same 400, 402 and 429 answers as POST /generations). 409 "
    "`not_retryable` for a queued, running or succeeded one."
)


@router.post(
    "/generations/{generation_id}/retry",
    response={
        201: GenerationOut,
        400: InvalidOut,
        402: RefusedOut,
        404: MessageOut,
        409: RefusedOut,
        429: MessageOut,
    },
    summary="Retry a failed generation as a new one",
    description=RETRY_DESCRIPTION,
)
def retry_generation(request: HttpRequest, response: HttpResponse, generation_id: str) -> Any:
    generation = selectors.generation_get(owner_id=_user_id(request), generation_id=generation_id)
    if generation is None:
        return Status(404, {"detail": "Not found."})
    try:
        retried = services.generation_retry(
            generation=generation,
            acting_user=request.user,  # type: ignore[arg-type]
        )
    except GenerationValidationError as exc:
        return Status(400, {"detail": exc.message, "errors": exc.field_errors})
    except GenerationRateLimitedError as exc:
        response["Retry-After"] = str(exc.retry_after)
        return Status(429, {"detail": exc.message})
    except GenerationAdmissionRefusedError as exc:
        return Status(402, {"detail": exc.message, "code": exc.code})
    except GenerationConflictError as exc:
        return Status(409, {"detail": exc.message, "code": exc.code})
    return Status(201, generation_out(retried))


@router.get("/models", response=ModelsOut, summary="Models and size presets you can use")
def list_models(request: HttpRequest) -> Any:
    models = selectors.model_choices()
    quotes = selectors.model_quotes(owner_id=_user_id(request))
    first = quotes[models[0]]
    return {
        "models": models,
        "default_model": models[0],
        "sizes": [
            {"label": label, "width": width, "height": height}
            for label, width, height in selectors.size_presets()
        ],
        "prices": [
            {
                "model": model,
                "price_micros": None if q.price_micros is None else str(q.price_micros),
                "price": q.text,
                "remaining_this_month": q.remaining,
                "affordable": q.affordable,
                "refusal": q.refusal,
                "refusal_code": q.refusal_code,
            }
            for model, q in quotes.items()
        ],
        "available_micros": (
            None if first.available_micros is None else str(first.available_micros)
        ),
    }


# --- watching: the event stream and the long poll -----------------------------------

#: The longest a long poll waits (seconds).
LONG_POLL_MAX_SECONDS = 60
#: A comment line this often keeps proxies from closing an idle stream (seconds).
STREAM_HEARTBEAT_SECONDS = 15.0
#: What the browser's EventSource waits before reconnecting (milliseconds).
STREAM_RETRY_MS = 2000

EVENTS_DESCRIPTION = """\
`text/event-stream` (Server-Sent Events) of this generation's state changes, pushed from
the worker's own transitions, until it finishes:

* first an `event: generation` whose data is the whole generation (the `GenerationOut`
  schema of `GET /generations/{id}`);
* then one `event: state` per change: `{"id", "status", "stage", "stage_label",
  "progress", "state"}`. With Redis every transition is sent, in order; on the embedded
  defaults (no Redis) the row is read every `INFERENCE_STREAM_POLL_SECONDS` and a stage
  shorter than that may be skipped;
* last, once finished, an `event: generation` with the whole generation again, and the
  stream ends. A deleted generation ends it with `event: gone`.

Each event's `id` is its `state`. A `: keep-alive` comment comes every 15 s; the stream
ends after `INFERENCE_STREAM_MAX_SECONDS` (EventSource reconnects by itself, and the first
event is again the whole generation). Same auth as the rest of the API.
"""


def _state_of(data: dict[str, Any]) -> str:
    return str(data["state"])


def _read_out(owner_id: int, generation_id: str) -> dict[str, Any] | None:
    """The generation as the API shows it, read by a view that then waits.

    In the ASGI web process the request's database connection is closed right after
    the read: a waiting stream or long poll holds none (the read before its answer
    opens a new one).
    """
    try:
        generation = selectors.generation_get(owner_id=owner_id, generation_id=generation_id)
        if generation is None:
            return None
        return generation_json(generation)
    finally:
        if settings.ASGI_SERVER:
            db_connection.close()


_read_out_async = sync_to_async(_read_out)


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _is_finished(data: dict[str, Any]) -> bool:
    return data["status"] in FINISHED_STATUSES


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


async def _event_stream(owner_id: int, generation_id: str) -> AsyncIterator[str]:
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time() + settings.INFERENCE_STREAM_MAX_SECONDS
    yield f"retry: {STREAM_RETRY_MS}\n\n"
    async with events.watch(generation_id) as watcher:
        data = await _read_out_async(owner_id, generation_id)
        if data is None:
            yield _sse("gone", {"id": generation_id})
            return
        yield _sse("generation", data, _state_of(data))
        if _is_finished(data):
            return
        watcher.seen(_state_of(data))
        while (left := deadline - loop_time()) > 0:
            state = await watcher.next(min(STREAM_HEARTBEAT_SECONDS, left))
            if state is None:
                yield ": keep-alive\n\n"
                continue
            if state.status == events.GONE:
                yield _sse("gone", {"id": generation_id})
                return
            if not state.finished:
                yield _sse("state", state.as_event(), state.token)
                continue
            data = await _read_out_async(owner_id, generation_id)
            if data is None:
                yield _sse("gone", {"id": generation_id})
            else:
                yield _sse("generation", data, _state_of(data))
            return


@router.get(
    "/generations/{generation_id}/events",
    response={200: None, 404: MessageOut},
    summary="Stream a generation's state changes (Server-Sent Events)",
    description=EVENTS_DESCRIPTION,
    openapi_extra={
        "responses": {
            200: {
                "description": "An event stream (see above)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
async def generation_events(request: HttpRequest, generation_id: str) -> Any:
    owner_id = _user_id(request)
    generation = await sync_to_async(selectors.generation_get)(
        owner_id=owner_id, generation_id=generation_id
    )
    if generation is None:
        return Status(404, {"detail": "Not found."})
    response = StreamingHttpResponse(
        _event_stream(owner_id, str(generation.pk)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


class NextQuery(Schema):
    since: str = Field(
        "", description="The `state` you have; the answer comes once the state differs"
    )
    wait: int = Field(
        30, ge=0, le=LONG_POLL_MAX_SECONDS, description="The most seconds to wait for a change"
    )


@router.get(
    "/generations/{generation_id}/next",
    response={200: GenerationOut, 404: MessageOut},
    summary="Long poll: the generation once its state differs from `since`",
    description=(
        "For clients that cannot read an event stream. Answers at once when the state is "
        "not `since` (or the generation is finished), else as soon as it changes, or after "
        "`wait` seconds with the unchanged generation: compare `state` and ask again. "
        "Same push as the event stream; performs no write."
    ),
)
async def generation_next(request: HttpRequest, generation_id: str, query: Query[NextQuery]) -> Any:
    owner_id = _user_id(request)
    key = _uuid_or_none(generation_id)
    if key is None:
        return Status(404, {"detail": "Not found."})
    generation_id = str(key)
    async with events.watch(generation_id) as watcher:
        data = await _read_out_async(owner_id, generation_id)
        if data is None:
            return Status(404, {"detail": "Not found."})
        state = _state_of(data)
        # A row behind `since` (an earlier stage of the same status: some stages are
        # published without a row write) is not news: wait, never step a client back.
        behind = events.token_behind(state, query.since)
        if (state != query.since and not behind) or _is_finished(data) or not query.wait:
            return Status(200, data)
        watcher.seen(query.since if behind else state)
        change = await watcher.next(float(query.wait))
        if change is None:
            return Status(200, data)
    data = await _read_out_async(owner_id, generation_id)
    if data is None:
        return Status(404, {"detail": "Not found."})
    if not change.finished and events.token_behind(_state_of(data), change.token):
        # A stage published without a row write ("saving"): answer the stage itself.
        data = {**data, **change.as_event()}
    return Status(200, data)
