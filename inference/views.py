"""Server-rendered pages for generating and browsing images.

Views read through ``inference.selectors`` and write through
``inference.services``; domain errors are turned into messages and status codes
here. Another user's generation is a 404 everywhere (never a 403), exactly like
one that does not exist.

The generate page works without JavaScript (a plain POST); static/js/generate.js
upgrades it to the no-reload flow over the JSON API.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from accounts.models import User
from billing.services import wallet_refresh_if_stale
from inference.errors import (
    GenerationAdmissionRefusedError,
    GenerationConflictError,
    GenerationRateLimitedError,
    GenerationValidationError,
    IdempotencyKeyError,
    IdempotencyKeyInUseError,
)
from inference.forms import SEED_INVALID_MESSAGE, GenerationForm, size_value
from inference.models import (
    IMAGE_EXTENSIONS,
    FailureCode,
    Generation,
    GenerationStage,
    GenerationStatus,
)
from inference.selectors import (
    generation_elapsed_seconds,
    generation_get,
    generation_list,
    generation_queue_position,
    generation_steps,
    model_choices,
    model_quotes,
    owner_low_balance,
    size_presets,
)
from inference.services import (
    ALREADY_PAID_MESSAGE,
    RETRYABLE_STATUSES,
    SEED_MAX,
    IdempotentReplay,
    generation_cancel_by_owner,
    generation_create,
    generation_delete,
    generation_limits,
    generation_retry,
    idempotent_request_begin,
    idempotent_request_complete,
    idempotent_request_release,
    request_fingerprint,
)

logger = logging.getLogger(__name__)

# The JSON API (inference/api.py) that static/js/generate.js talks to.
GENERATIONS_API_URL_NAME = "api-v1:create_generation"
GALLERY_PAGE_SIZE = 24
RECENT_COUNT = 6
IMAGE_CACHE_CONTROL = "private, max-age=3600"

# Extra guidance shown next to a failure message, by failure code.
FAILURE_HINTS: dict[FailureCode, str] = {
    FailureCode.INSUFFICIENT_CREDIT: (
        "Top up your pymthouse balance, then use “Generate similar” to try again."
    ),
    FailureCode.UPSTREAM_UNAVAILABLE: (
        "This is on the network's side, not yours; your prompt is fine."
    ),
    FailureCode.MODEL_UNAVAILABLE: "Pick another model with “Generate similar”.",
}


def _owner(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


def _get_owned_or_404(request: HttpRequest, generation_id: uuid.UUID) -> Generation:
    generation = generation_get(owner_id=_owner(request).pk, generation_id=generation_id)
    if generation is None:
        raise Http404("No such generation.")
    return generation


def _initial_from_query(request: HttpRequest) -> dict[str, Any]:
    """Prefill from "Generate similar" links.

    Query: ``prompt``, ``negative_prompt``, ``model_id``, ``width``, ``height``, ``seed``.
    """
    query = request.GET
    limits = generation_limits()  # the same defaults as the JSON API's
    initial: dict[str, Any] = {
        "model_id": limits.default_model,
        "size": size_value(limits.default_width, limits.default_height),
    }
    for name in ("prompt", "negative_prompt", "model_id", "seed"):
        if query.get(name):
            initial[name] = query[name]
    width, height = query.get("width", ""), query.get("height", "")
    if width.isdigit() and height.isdigit():
        initial["size"] = size_value(int(width), int(height))
    return initial


def _generate_context(request: HttpRequest, form: GenerationForm) -> dict[str, Any]:
    owner = _owner(request)
    advanced_open = bool(
        form["negative_prompt"].value()
        or form["seed"].value()
        or form.errors.keys() & {"negative_prompt", "seed"}
    )
    selected = form["model_id"].value() or model_choices()[0]
    quotes = model_quotes(owner_id=owner.pk)
    return {
        "form": form,
        "models": model_choices(),
        "selected_model": selected,
        "quote": quotes.get(selected) or next(iter(quotes.values())),
        "low_balance": owner_low_balance(owner_id=owner.pk),
        "quotes_json": {
            model: {"text": q.text, "affordable": q.affordable, "refusal": q.refusal}
            for model, q in quotes.items()
        },
        "size_options": form.size_options(size_presets()),
        "advanced_open": advanced_open,
        "recent_generations": list(generation_list(owner_id=owner.pk)[:RECENT_COUNT]),
        "api_url": reverse(GENERATIONS_API_URL_NAME),
        "generation_stages": GenerationStage.table(),
        "already_paid_message": ALREADY_PAID_MESSAGE,
        "idempotency_key": uuid.uuid4().hex,  # a new one each time the form is shown
        "max_prompt_length": settings.INFERENCE_MAX_PROMPT_LENGTH,
        "seed_max": SEED_MAX,
        "seed_invalid_message": SEED_INVALID_MESSAGE,
    }


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def generate(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        wallet_refresh_if_stale(user_id=_owner(request).pk)  # merchant mode only
        form = GenerationForm(initial=_initial_from_query(request))
        return render(request, "inference/generate.html", _generate_context(request, form))

    form = GenerationForm(request.POST)
    status = 200
    response_headers: dict[str, str] = {}
    if form.is_valid():
        claim = None
        arguments = form.service_arguments()
        if form.cleaned_data["idempotency_key"]:
            try:
                begun = idempotent_request_begin(
                    owner_id=_owner(request).pk,
                    key=form.cleaned_data["idempotency_key"],
                    fingerprint=request_fingerprint(arguments),
                )
            except IdempotencyKeyInUseError:  # the first post of this form is being admitted
                messages.success(request, "Your image is on its way.")
                return redirect("inference:gallery")
            except IdempotencyKeyError:  # a tampered key: admit the post without one
                begun = None
            if isinstance(begun, IdempotentReplay):
                return _form_replay(request, begun)
            claim = begun
        try:
            with transaction.atomic():
                generation = generation_create(owner=_owner(request), **arguments)
                if claim is not None:
                    idempotent_request_complete(
                        claim=claim, status=201, body={"id": str(generation.pk)}
                    )
        except GenerationValidationError as exc:
            form.add_service_errors(exc.field_errors)
            status = 400
        except GenerationRateLimitedError as exc:
            messages.error(
                request, f"{exc.message} You can try again in {exc.retry_after} seconds."
            )
            status = 429
            response_headers["Retry-After"] = str(exc.retry_after)
        except GenerationAdmissionRefusedError as exc:
            messages.error(request, exc.message)
            status = 402
        except IdempotencyKeyInUseError:
            messages.success(request, "Your image is on its way.")
            return redirect("inference:gallery")
        else:
            messages.success(request, "Your image is on its way.")
            return redirect("inference:detail", generation_id=generation.pk)
        finally:
            if claim is not None:
                # A no-op once completed: only a created image is remembered (a refused
                # post may be sent again; the re-rendered form carries a new key anyway).
                idempotent_request_release(claim=claim)
    else:
        status = 400
    if status == 400:
        messages.error(request, "Please correct the highlighted fields.")
    response = render(
        request, "inference/generate.html", _generate_context(request, form), status=status
    )
    for name, value in response_headers.items():
        response[name] = value
    return response


def _form_replay(request: HttpRequest, replay: IdempotentReplay) -> HttpResponse:
    """A repeat post of a form that already made an image: show that image."""
    body = replay.body if isinstance(replay.body, dict) else {}
    generation_id = body.get("id")
    if replay.status == 201 and isinstance(generation_id, str):
        return redirect("inference:detail", generation_id=generation_id)
    return redirect("inference:gallery")


@login_required
@require_safe
def gallery(request: HttpRequest) -> HttpResponse:
    """Query: ``q`` (part of the prompt), ``status``, ``model``, ``page``; an unknown
    status or model filters nothing rather than erring (a stale bookmark still works)."""
    search = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    status = status if status in GenerationStatus.values else ""
    model = request.GET.get("model", "")
    model = model if model in model_choices() else ""
    generations = generation_list(
        owner_id=_owner(request).pk, search=search, status=status, model_id=model
    )
    paginator = Paginator(generations, GALLERY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)  # query here, not while rendering
    filters = {
        key: value for key, value in (("q", search), ("status", status), ("model", model)) if value
    }
    return render(
        request,
        "inference/gallery.html",
        {
            "page": page,
            "paginator": paginator,
            "search": search,
            "status": status,
            "model": model,
            "filtered": bool(filters),
            "filter_query": urlencode(filters),
            "statuses": GenerationStatus.choices,
            "models": model_choices(),
        },
    )


@login_required
@require_safe
def detail(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    generation = _get_owned_or_404(request, generation_id)
    similar_query = {
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "model_id": generation.model_id,
        "width": generation.width,
        "height": generation.height,
    }
    if generation.seed is not None:  # only a seed the user chose; a random one stays random
        similar_query["seed"] = generation.seed
    failure_code = FailureCode.of(generation.error_code)
    seed_used = generation.image_seed if generation.image_seed is not None else generation.seed
    context = {
        "generation": generation,
        "seed_used": seed_used,
        "progress": generation.progress,
        "similar_url": f"{reverse('inference:generate')}?{urlencode(similar_query)}",
        "failure_hint": FAILURE_HINTS.get(failure_code, "") if failure_code else "",
        "is_succeeded": generation.status == GenerationStatus.SUCCEEDED,
        "is_failed": generation.status in (GenerationStatus.FAILED, GenerationStatus.CANCELED),
        "is_running": generation.status == GenerationStatus.RUNNING,
        "steps": generation_steps(generation=generation),
        "queue_position": generation_queue_position(generation=generation),
        "elapsed_seconds": f"{generation_elapsed_seconds(generation=generation):.3f}",
        "is_paid": generation.payment_claimed_at is not None,
        "already_paid_message": ALREADY_PAID_MESSAGE,
        "can_retry": generation.status in RETRYABLE_STATUSES,
        "api_url": reverse(GENERATIONS_API_URL_NAME),
        "generation_stages": GenerationStage.table(),
    }
    return render(request, "inference/detail.html", context)


@login_required
@require_safe
def image(request: HttpRequest, generation_id: uuid.UUID) -> FileResponse:
    generation = _get_owned_or_404(request, generation_id)
    name = generation.image.name
    if generation.status != GenerationStatus.SUCCEEDED or not name:
        raise Http404("No image for this generation.")
    try:
        handle = generation.image.storage.open(name, "rb")
    except FileNotFoundError as exc:
        logger.warning("generation %s: image file is missing", generation.pk)
        raise Http404("No image for this generation.") from exc
    download = request.GET.get("download") == "1"
    content_type = generation.image_content_type
    extension = IMAGE_EXTENSIONS[content_type]
    response = FileResponse(
        handle,
        content_type=content_type,
        as_attachment=download,
        filename=f"pixelhouse-{generation.pk.hex[:8]}.{extension}",
    )
    response["Cache-Control"] = IMAGE_CACHE_CONTROL
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_POST
def delete(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    generation = _get_owned_or_404(request, generation_id)
    try:
        generation_delete(generation=generation, acting_user=_owner(request))
    except GenerationConflictError as exc:
        messages.error(request, exc.message)
        return redirect("inference:detail", generation_id=generation.pk)
    messages.success(request, "Image deleted.")
    return redirect("inference:gallery")


@login_required
@require_POST
def cancel(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    generation = _get_owned_or_404(request, generation_id)
    try:
        generation_cancel_by_owner(generation_id=generation.pk, acting_user=_owner(request))
    except GenerationConflictError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Canceled. Nothing was charged.")
    return redirect("inference:detail", generation_id=generation.pk)


@login_required
@require_POST
def retry(request: HttpRequest, generation_id: uuid.UUID) -> HttpResponse:
    generation = _get_owned_or_404(request, generation_id)
    try:
        retried = generation_retry(generation=generation, acting_user=_owner(request))
    except GenerationValidationError as exc:
        messages.error(request, " ".join(exc.field_errors.values()))
    except GenerationRateLimitedError as exc:
        messages.error(request, f"{exc.message} You can try again in {exc.retry_after} seconds.")
    except (GenerationAdmissionRefusedError, GenerationConflictError) as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Retrying as a new image.")
        return redirect("inference:detail", generation_id=retried.pk)
    return redirect("inference:detail", generation_id=generation.pk)
