"""go-livepeer AI-gateway batch API at the sandbox root (docs/upstream.md §L3).

``POST /text-to-image`` is open like go-livepeer's gateway: it ignores ``Authorization``
and ``X-Request-Id``, pays orchestrators with its own key, and so never charges or
refuses an end user (no 401, 402 or 483, no usage event). It decodes the body like Go
and answers ``{"images":[{"nsfw","seed","url"}]}`` with relative
``/stream/<8hex>/<8hex>.png`` URLs served by ``GET /stream/…``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.livepeer.common import MAX_PIXELS_PER_IMAGE, go_error
from sandbox.livepeer.godecode import GoDecodeError, decode_text_to_image
from sandbox.png import default_seed, render_png
from sandbox.transport import drop_connection
from sandbox.web import get_state, json_response

logger = logging.getLogger(__name__)

DEFAULT_SIDE = 512  # go-livepeer fills width/height with 512 when missing


async def text_to_image(request: Request) -> Response:
    state = get_state(request)
    try:
        params = decode_text_to_image(await request.body())
    except GoDecodeError as exc:
        return go_error(400, str(exc))

    model_id = params.get("model_id")
    if not model_id:
        # go-livepeer dereferences the nil model_id and panics: the client gets no reply.
        await drop_connection(request.scope)
        return Response(status_code=500)
    if model_id not in state.settings.models:
        return go_error(503, "Service Unavailable Error")  # no orchestrator serves the model
    prompt: str = params.get("prompt", "")
    if not prompt.strip():
        return go_error(400, ": Prompt must be provided.")
    width: int = params.get("width", DEFAULT_SIDE)
    height: int = params.get("height", DEFAULT_SIDE)
    count = max(1, params.get("num_images_per_prompt", 1))
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        return go_error(
            400,
            ": Error during model execution: `height` and `width` have to be divisible by 8 "
            f"but are {height} and {width}..",
        )
    if width * height * count > MAX_PIXELS_PER_IMAGE:
        return go_error(503, "Service Unavailable Error")  # runner OOM, then no orchestrator
    seed: int = params.get("seed", default_seed(prompt))

    request_id = secrets.token_hex(4)

    if state.config.runner_latency_seconds > 0:
        await asyncio.sleep(state.config.runner_latency_seconds)
    images = []
    for index in range(count):
        image_seed = seed + index  # ai-runner: image i gets seed + i
        png = await asyncio.to_thread(
            render_png,
            width=width,
            height=height,
            model_id=model_id,
            seed=image_seed,
            prompt=prompt,
        )
        file_name = f"{secrets.token_hex(4)}.png"
        state.store_image(request_id, file_name, png)
        images.append(
            {"nsfw": False, "seed": image_seed, "url": f"/stream/{request_id}/{file_name}"}
        )
    return json_response({"images": images}, trailing_newline=True)


async def stream_file(request: Request) -> Response:
    """lpms ``/stream/`` file serving: image/png, Content-Length, max-age=5, CORS *."""
    data = get_state(request).load_image(
        request.path_params["request_id"], request.path_params["file_name"]
    )
    if data is None:
        return Response(
            b"ErrNotFound\n",
            404,
            headers={"X-Content-Type-Options": "nosniff"},
            media_type="text/plain; charset=utf-8",
        )
    return Response(
        data,
        headers={"Cache-Control": "max-age=5", "Access-Control-Allow-Origin": "*"},
        media_type="image/png",
    )


async def healthz(request: Request) -> Response:
    return Response(b"", 200)


routes = [
    Route("/text-to-image", text_to_image, methods=["POST"]),
    Route("/stream/{request_id}/{file_name}", stream_file, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
