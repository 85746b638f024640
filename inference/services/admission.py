"""Creating a generation: validation, then one atomic admission step.

Admission runs in one short transaction that starts with the owner's rate-limit
counter (one conditional UPDATE, which is also the owner's admission lock), so
concurrent submissions of one user are admitted one at a time: the rate-limit
counter, the active-job cap and the insert see each other exactly, on every
database and whatever the cache backend. Then billing's hold, the generation
INSERT and its admission record; the run message is published after commit.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailableError

from accounts.models import User
from billing.errors import CreditRefusedError
from billing.services import generation_admit, wallet_refresh_if_stale
from inference import tasks
from inference.errors import (
    GenerationAdmissionRefusedError,
    GenerationRateLimitedError,
    GenerationValidationError,
)
from inference.models import AdmittedImage, Generation, GenerationStatus, SubmissionWindow
from inference.selectors import generations_counted_this_month, model_choices, size_presets

logger = logging.getLogger("inference.services")

SEED_MAX = 2**32 - 1
SIZE_STEP = 8


@dataclass(frozen=True)
class GenerationLimits:
    """What a submission may be: the one statement of the rules that
    :func:`generation_create` enforces and the API's OpenAPI schema publishes
    (``inference.api.GenerationIn``), with the defaults the generate page starts with."""

    max_prompt_length: int
    models: tuple[str, ...]
    min_size: int
    max_size: int
    size_step: int
    seed_max: int
    default_model: str
    default_width: int
    default_height: int


def generation_limits() -> GenerationLimits:
    """The rules under the current settings (``INFERENCE_*``)."""
    models = tuple(model_choices())
    presets = size_presets()
    low, high = settings.INFERENCE_MIN_SIZE, settings.INFERENCE_MAX_SIZE
    width, height = (presets[0][1], presets[0][2]) if presets else (low, low)
    return GenerationLimits(
        max_prompt_length=settings.INFERENCE_MAX_PROMPT_LENGTH,
        models=models,
        min_size=low,
        max_size=high,
        size_step=SIZE_STEP,
        seed_max=SEED_MAX,
        default_model=models[0],
        default_width=width,
        default_height=height,
    )


#: Bidirectional formatting characters (embeddings, overrides, isolates, marks): a
#: right-to-left override in a prompt would reorder how everything after it is shown.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_ORDINARY_WHITESPACE = frozenset("\t\n\r")


def user_text_clean(text: str) -> str:
    """``text`` without control characters (C0, DEL, C1) other than tab and newlines,
    and without bidirectional formatting characters; stripped of outer whitespace.

    NUL is not cleaned here but refused (:func:`_validate`): it is never a typo.
    """
    return "".join(
        char
        for char in text
        if char == "\0"
        or char in _ORDINARY_WHITESPACE
        or not (unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS)
    ).strip()


def _validate(
    *, prompt: str, negative_prompt: str, model_id: str, width: Any, height: Any, seed: Any
) -> dict[str, str]:
    errors: dict[str, str] = {}
    limits = generation_limits()
    max_len = limits.max_prompt_length
    if "\0" in prompt:
        errors["prompt"] = "The prompt contains a NUL character; remove it."
    elif not prompt:
        errors["prompt"] = "Describe the image you want."
    elif len(prompt) > max_len:
        errors["prompt"] = f"Keep the prompt under {max_len} characters."
    if "\0" in negative_prompt:
        errors["negative_prompt"] = "The negative prompt contains a NUL character; remove it."
    elif len(negative_prompt) > max_len:
        errors["negative_prompt"] = f"Keep the negative prompt under {max_len} characters."
    if model_id not in limits.models:
        errors["model_id"] = "Choose one of the available models."
    low, high, step = limits.min_size, limits.max_size, limits.size_step
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            errors[name] = f"{name.capitalize()} must be a whole number of pixels."
        elif not low <= value <= high or value % step:
            errors[name] = (
                f"{name.capitalize()} must be a multiple of {step} between {low} and {high}."
            )
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= limits.seed_max
    ):
        errors["seed"] = f"Seed must be a whole number between 0 and {limits.seed_max}."
    return errors


def _limits_check(*, owner_id: int) -> None:
    """Rate-limit counter, then the active-job cap, in the admission transaction.

    The counter is one conditional UPDATE that also takes the owner's admission lock
    (the window row, held until commit): concurrent submissions of one owner queue up
    there, so the count, the cap and the insert see each other exactly. The UPDATE
    matches nothing when the window is full (or the row is new): only then is the row
    inserted (if missing) and the UPDATE repeated. A refusal raises, and the
    transaction's rollback undoes the increment.
    """
    length = settings.INFERENCE_RATE_LIMIT_WINDOW_SECONDS
    now = int(time.time())
    window = now // length
    limit = settings.INFERENCE_RATE_LIMIT_COUNT
    counted = SubmissionWindow.objects.filter(owner_id=owner_id).filter(
        ~Q(window=window) | Q(count__lt=limit)
    )
    increment = {
        "count": Case(When(window=window, then=F("count") + 1), default=Value(1)),
        "window": window,
    }
    admitted = counted.update(**increment)
    if not admitted:
        # The owner's first submission: the row, then the same UPDATE (a row that was
        # there all along, full, still refuses). INSERT … ON CONFLICT DO NOTHING.
        SubmissionWindow.objects.bulk_create(
            [SubmissionWindow(owner_id=owner_id, window=window, count=0)], ignore_conflicts=True
        )
        admitted = counted.update(**increment)
    active = Generation.objects.for_owner(owner_id).unfinished().count()
    if active >= settings.INFERENCE_MAX_ACTIVE_PER_USER:
        raise GenerationRateLimitedError(
            "You already have images in progress. Wait for one to finish.", retry_after=5
        )
    if not admitted:
        raise GenerationRateLimitedError(
            "You're generating too fast. Please wait a moment.",
            retry_after=max(1, length - now % length),
        )


def generation_admit_step(*, generation: Generation) -> None:
    """The admission hook: runs just before the row is inserted, with the owner locked.

    Raising :class:`inference.errors.GenerationAdmissionRefusedError` (or a subclass)
    refuses the submission: the transaction rolls back, so no row, no task and no
    upstream call remain, and the API answers 402. Billing admits it (a counted limit,
    or a credit hold), handed the owner, the model and this month's count, which
    includes this image (the recorded ones plus this one, read only by a plan that
    counts images): ``billing.services.generation_admit``. The hold's ceiling is set on
    ``generation`` before its INSERT (the hold's foreign key to it is checked at commit).
    The caller then inserts the row and records the image (``AdmittedImage``,
    append-only: what the count reads), in this transaction.
    """
    try:
        admitted = generation_admit(
            owner_id=generation.owner_id,
            generation_id=generation.pk,
            model_id=generation.model_id,
            images_this_month=lambda: (
                generations_counted_this_month(owner_id=generation.owner_id) + 1
            ),
            description=generation_description(generation),
        )
    except CreditRefusedError as exc:
        raise GenerationAdmissionRefusedError(exc.message, code=exc.code) from exc
    generation.max_fee_wei = admitted.max_fee_wei


def generation_description(generation: Generation) -> str:
    """The image in words for the ledger: ``“a lighthouse at dusk…” (SDXL-Lightning)``."""
    prompt = " ".join(generation.prompt.split())
    if len(prompt) > 60:
        prompt = prompt[:59].rstrip() + "…"
    model = generation.model_id.rsplit("/", 1)[-1]
    return f"“{prompt}” ({model})"


def _publish(generation_id: str) -> None:
    """Send the run message, after the admission committed.

    The generation is admitted once its row is committed, so a broker that is away
    (Redis restarting, a full disk) must not turn the submission into an error: the
    client would submit again and get, and pay for, a second generation. The row is
    instead marked as due for the next reconcile sweep (``enqueued_at`` one window
    back; ``generations_reconcile`` sends the message once the broker is back).
    """
    try:
        tasks.generation_run_task.delay(generation_id)
    except (BrokerUnavailableError, OSError):
        logger.warning(
            "generation %s: the broker refused its message; the next reconcile sweep sends it",
            generation_id,
            exc_info=True,
        )
        window = timedelta(seconds=settings.INFERENCE_REQUEUE_AFTER_SECONDS + 1)
        try:
            Generation.objects.filter(pk=generation_id, status=GenerationStatus.QUEUED).update(
                enqueued_at=timezone.now() - window
            )
        except DatabaseError:
            # Still found by reconcile, one window after its submission.
            logger.warning("generation %s: could not mark it due for reconcile", generation_id)


def generation_create(
    *,
    owner: User,
    prompt: str,
    width: Any = None,
    height: Any = None,
    negative_prompt: str = "",
    model_id: str | None = None,
    seed: Any = None,
    enqueue: bool = True,
) -> Generation:
    """Validate, admit (limits, then the admission hook), store, and enqueue after commit.

    ``enqueue=False`` leaves running to the caller (the verification command
    runs it inline). No model or size means the generate page's defaults
    (:func:`generation_limits`).
    """
    prompt = user_text_clean(prompt or "")
    negative_prompt = user_text_clean(negative_prompt or "")
    limits = generation_limits()
    model_id = model_id or limits.default_model
    width = limits.default_width if width is None else width
    height = limits.default_height if height is None else height
    errors = _validate(
        prompt=prompt,
        negative_prompt=negative_prompt,
        model_id=model_id,
        width=width,
        height=height,
        seed=seed,
    )
    if errors:
        raise GenerationValidationError(errors)
    # Merchant mode: a fresh copy of the user's pymthouse wallet before admission reads
    # it (HTTP, so outside the admission transaction; a no-op in owner_rollup).
    wallet_refresh_if_stale(user_id=owner.pk)
    generation = Generation(
        owner=owner,
        prompt=prompt,
        negative_prompt=negative_prompt,
        model_id=model_id,
        width=width,
        height=height,
        seed=seed,
        backend=settings.INFERENCE_BACKEND,
        enqueued_at=timezone.now() if enqueue else None,
    )
    # Every value above was validated by _validate or built here: no full_clean (its
    # checks are queries that re-prove them; the database enforces its constraints).
    with transaction.atomic():
        # The admission lock is the owner's rate-limit row (_limits_check), not the user
        # row: a settling payment's foreign-key checks on the user never wait for it.
        _limits_check(owner_id=owner.pk)
        generation_admit_step(generation=generation)
        generation.save(force_insert=True)
        AdmittedImage.objects.create(
            generation_id=generation.pk, owner_id=owner.pk, admitted_at=generation.created_at
        )
        generation_id = str(generation.pk)
        if enqueue:
            transaction.on_commit(lambda: _publish(generation_id))
    logger.info("generation %s queued for user %s", generation_id, owner.pk)
    return generation
