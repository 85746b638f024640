"""Live-runner single-shot image apps at ``{public}/runner/<name>/…`` (docs/upstream.md §L1).

Unpaid (or badly paid) calls get the 402 payment challenge; a call carrying a valid,
unused ``Livepeer-Payment`` for this runner that covers ``W×H`` pixels is served after
the configured runner latency, either inline ("sync") or as a fal-style queue receipt
("queue"). The body is validated before the payment is looked at, so a malformed
request never costs a ticket.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.livepeer.common import MAX_PIXELS_PER_IMAGE, payment_challenge, runner_error
from sandbox.livepeer.tickets import SealError, runner_catalog, unseal
from sandbox.png import default_seed, render_png
from sandbox.state import QueueJob, SandboxState
from sandbox.web import InvalidJSONError, get_state, json_response, read_json

logger = logging.getLogger(__name__)

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIZE = "1024x576"  # ai-runner's default
MAX_QUEUED_JOBS = 10_000


class RunnerRequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _runner_model(state: SandboxState, name: str) -> str | None:
    return runner_catalog(state.settings.models).get(name)


def parse_image_request(state: SandboxState, runner_model: str, body: Any) -> dict[str, Any]:
    """Validate ``{prompt, size:"WxH", model_id?, seed?, negative_prompt?}``."""
    if not isinstance(body, dict):
        raise RunnerRequestError(400, "request body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RunnerRequestError(400, "Prompt must be provided.")
    model_id = body.get("model_id") or runner_model
    if model_id not in state.settings.models:
        raise RunnerRequestError(400, f"Unknown model {model_id!r}.")
    if model_id != runner_model:
        raise RunnerRequestError(
            400, f"pipeline configured with {runner_model} but called with {model_id}."
        )
    size = body.get("size") or DEFAULT_SIZE
    match = SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise RunnerRequestError(400, "size must look like WIDTHxHEIGHT, e.g. 1024x1024.")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise RunnerRequestError(
            400,
            "Error during model execution: `height` and `width` have to be divisible by 8 "
            f"but are {height} and {width}.",
        )
    if width * height > MAX_PIXELS_PER_IMAGE:
        raise RunnerRequestError(500, "Out of memory error. Try reducing output image resolution.")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RunnerRequestError(400, "seed must be an integer.")
    negative_prompt = body.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise RunnerRequestError(400, "negative_prompt must be a string.")
    return {
        "prompt": prompt,
        "model_id": model_id,
        "width": width,
        "height": height,
        "seed": default_seed(prompt) if seed is None else seed,
    }


def _accept_payment(state: SandboxState, name: str, header: str | None, pixels: int) -> bool:
    """Verify and consume a Livepeer-Payment for this runner covering ``pixels``."""
    if not header:
        return False
    try:
        payment = unseal(state.hmac_secret, "payment", header)
    except SealError:
        return False
    ticket_id = str(payment.get("ticketId"))
    if (
        payment.get("runner") != name
        or int(payment.get("expiresAt", 0)) < time.time()
        or int(payment.get("pixels", 0)) < pixels
        or ticket_id in state.used_tickets
    ):
        return False
    state.used_tickets.add(ticket_id)
    return True


async def images_body(job: dict[str, Any]) -> dict[str, Any]:
    png = await asyncio.to_thread(
        render_png,
        width=job["width"],
        height=job["height"],
        model_id=job["model_id"],
        seed=job["seed"],
        prompt=job["prompt"],
    )
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"images": [{"url": url, "seed": job["seed"], "nsfw": False}]}


async def run_image(request: Request) -> Response:
    state = get_state(request)
    name: str = request.path_params["name"]
    runner_model = _runner_model(state, name)
    if runner_model is None:
        return runner_error(404, f"runner {name!r} not found")
    try:
        job = parse_image_request(state, runner_model, await read_json(request))
    except InvalidJSONError:
        return runner_error(400, "request body is not valid JSON")
    except RunnerRequestError as exc:
        return runner_error(exc.status, str(exc))
    if not _accept_payment(
        state, name, request.headers.get("livepeer-payment"), job["width"] * job["height"]
    ):
        return json_response(payment_challenge(state, name, runner_model), 402)

    latency = state.config.runner_latency_seconds
    if state.config.runner_mode == "queue":
        request_id = secrets.token_hex(12)
        while len(state.queue_jobs) >= MAX_QUEUED_JOBS:
            state.queue_jobs.pop(next(iter(state.queue_jobs)))
        state.queue_jobs[request_id] = QueueJob(
            request_id=request_id, runner=name, ready_at=time.monotonic() + latency, body=job
        )
        base = f"{state.settings.public_url}/runner/{name}/requests/{request_id}"
        return json_response(
            {
                "status": "IN_QUEUE",
                "request_id": request_id,
                "status_url": f"{base}/status",
                "response_url": base,
            }
        )
    if latency > 0:
        await asyncio.sleep(latency)
    return json_response(await images_body(job))


def _queued(state: SandboxState, request: Request) -> QueueJob | None:
    job = state.queue_jobs.get(request.path_params["request_id"])
    return job if job is not None and job.runner == request.path_params["name"] else None


async def queue_status(request: Request) -> Response:
    job = _queued(get_state(request), request)
    if job is None:
        return runner_error(404, "request not found")
    done = time.monotonic() >= job.ready_at
    return json_response({"status": "COMPLETED" if done else "IN_PROGRESS"})


async def queue_response(request: Request) -> Response:
    job = _queued(get_state(request), request)
    if job is None:
        return runner_error(404, "request not found")
    if time.monotonic() < job.ready_at:
        return runner_error(400, "Request is still in progress")
    return json_response(await images_body(job.body))


async def refresh_payment(request: Request) -> Response:
    """Fresh payment params, keeping the caller's manifest when it names one."""
    state = get_state(request)
    name: str = request.path_params["name"]
    runner_model = _runner_model(state, name)
    if runner_model is None:
        return runner_error(404, f"runner {name!r} not found")
    manifest_id = None
    try:
        body = await read_json(request)
    except InvalidJSONError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("manifest_id"), str):
        manifest_id = body["manifest_id"]
    return json_response(payment_challenge(state, name, runner_model, manifest_id))


async def payment(request: Request) -> Response:
    """``payment_url``: only metered (live) runners need it; per-pixel runners ack a payment."""
    state = get_state(request)
    name: str = request.path_params["name"]
    runner_model = _runner_model(state, name)
    if runner_model is None:
        return runner_error(404, f"runner {name!r} not found")
    if not _accept_payment(state, name, request.headers.get("livepeer-payment"), 0):
        return json_response(payment_challenge(state, name, runner_model), 402)
    return json_response({"accepted": True})


routes = [
    Route("/runner/{name}/image", run_image, methods=["POST"]),
    Route("/runner/{name}/refresh-payment", refresh_payment, methods=["POST"]),
    # Clients that derive it from payment_url ("{payment_url}/refresh-payment") land here.
    Route("/runner/{name}/payment/refresh-payment", refresh_payment, methods=["POST"]),
    Route("/runner/{name}/payment", payment, methods=["POST"]),
    Route("/runner/{name}/requests/{request_id}/status", queue_status, methods=["GET"]),
    Route("/runner/{name}/requests/{request_id}", queue_response, methods=["GET"]),
]
