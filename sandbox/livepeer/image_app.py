"""The image-generation app behind each live runner (what the orchestrator proxies to).

The request and response are app-defined (docs/upstream.md §L1); this app takes
``POST /`` ``{prompt, size:"WxH", model_id?, seed?, negative_prompt?}`` and answers
``{"images":[{url:"data:image/png;base64,…", seed, nsfw}]}`` inline ("sync"), or a
fal-style queue receipt ("queue"). It runs only after the orchestrator accepted the
payment, so a body it refuses has already been paid for, as on the real network.
Configured app faults (``appFault``) misbehave here, after payment.
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

from sandbox.livepeer.common import MAX_PIXELS_PER_IMAGE, runner_error
from sandbox.png import default_seed, render_jpeg, render_png
from sandbox.runners import RunnerConfig
from sandbox.state import QueueJob, SandboxState
from sandbox.transport import drop_connection
from sandbox.web import get_state, json_response

logger = logging.getLogger(__name__)

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIZE = "1024x576"  # ai-runner's default
MAX_QUEUED_JOBS = 10_000


class AppRequestError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_image_request(state: SandboxState, runner_model: str, body: Any) -> dict[str, Any]:
    """Validate ``{prompt, size:"WxH", model_id?, seed?, negative_prompt?}``."""
    if not isinstance(body, dict):
        raise AppRequestError(400, "request body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise AppRequestError(400, "Prompt must be provided.")
    model_id = body.get("model_id") or runner_model
    if model_id not in state.settings.models:
        raise AppRequestError(400, f"Unknown model {model_id!r}.")
    if model_id != runner_model:
        raise AppRequestError(
            400, f"pipeline configured with {runner_model} but called with {model_id}."
        )
    size = body.get("size") or DEFAULT_SIZE
    match = SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise AppRequestError(400, "size must look like WIDTHxHEIGHT, e.g. 1024x1024.")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise AppRequestError(
            400,
            "Error during model execution: `height` and `width` have to be divisible by 8 "
            f"but are {height} and {width}.",
        )
    if width * height > MAX_PIXELS_PER_IMAGE:
        raise AppRequestError(500, "Out of memory error. Try reducing output image resolution.")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise AppRequestError(400, "seed must be an integer.")
    negative_prompt = body.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise AppRequestError(400, "negative_prompt must be a string.")
    return {
        "prompt": prompt,
        "model_id": model_id,
        "width": width,
        "height": height,
        "seed": default_seed(prompt) if seed is None else seed,
    }


async def images_body(job: dict[str, Any], fault: dict[str, Any] | None = None) -> dict[str, Any]:
    kind = fault["kind"] if fault else None
    width, height = job["width"], job["height"]
    if kind == "image-url":
        url = f"http://{fault['host']}/images/{secrets.token_hex(8)}.png"  # type: ignore[index]
        return {"images": [{"url": url, "seed": job["seed"], "nsfw": False}]}
    if kind == "jpeg":
        data = await asyncio.to_thread(render_jpeg, width=width, height=height)
        url = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        return {"images": [{"url": url, "seed": job["seed"], "nsfw": False}]}
    if kind == "wrong-size":
        width, height = width + 8, height + 8
    png = await asyncio.to_thread(
        render_png,
        width=width,
        height=height,
        model_id=job["model_id"],
        seed=job["seed"],
        prompt=job["prompt"],
    )
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"images": [{"url": url, "seed": job["seed"], "nsfw": False}]}


def oversized_response(size: int) -> Response:
    """A 200 JSON body of exactly ``size`` bytes (padding inside a JSON string)."""
    prefix, suffix = b'{"images":[],"padding":"', b'"}'
    padding = max(0, size - len(prefix) - len(suffix))
    return Response(prefix + b"x" * padding + suffix, media_type="application/json")


async def serve_app(
    state: SandboxState, runner: RunnerConfig, request: Request, app_path: str
) -> Response:
    """The app's answer to a paid, proxied request (the session is held by the caller)."""
    fault = runner.take_app_fault()
    if fault is not None and fault["kind"] == "drop":
        await drop_connection(request.scope)
        return Response(status_code=500)
    if app_path not in ("", "/"):
        return json_response({"detail": "Not Found"}, 404)  # FastAPI's unknown route
    if request.method != "POST":
        return json_response({"detail": "Method Not Allowed"}, 405)
    try:
        body = await request.json()
    except ValueError:
        return runner_error(400, "request body is not valid JSON")
    try:
        job = parse_image_request(state, runner.model, body)
    except AppRequestError as exc:
        return runner_error(exc.status, str(exc))
    if fault is not None and fault["kind"] == "redirect":
        return Response(b"", fault["status"], headers={"Location": fault["location"]})

    latency = state.config.runner_latency_seconds
    if state.config.runner_mode == "queue":
        request_id = secrets.token_hex(12)
        while len(state.queue_jobs) >= MAX_QUEUED_JOBS:
            state.queue_jobs.pop(next(iter(state.queue_jobs)))
        state.queue_jobs[request_id] = QueueJob(
            request_id=request_id,
            runner=runner.runner_id,
            ready_at=time.monotonic() + latency,
            body=job,
            fault=fault,
        )
        base = f"{state.settings.public_url}/runner/{runner.runner_id}/requests/{request_id}"
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
    if fault is not None and fault["kind"] == "oversized":
        return oversized_response(fault["bytes"])
    return json_response(await images_body(job, fault))


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
    if job.fault is not None and job.fault["kind"] == "oversized":
        return oversized_response(job.fault["bytes"])
    return json_response(await images_body(job.body, job.fault))


routes = [
    Route("/runner/{name}/requests/{request_id}/status", queue_status, methods=["GET"]),
    Route("/runner/{name}/requests/{request_id}", queue_response, methods=["GET"]),
]
