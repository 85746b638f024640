"""``Idempotency-Key`` on ``POST /generations``, with Stripe's semantics.

Stripe (docs.stripe.com/api/idempotent_requests): the first request with a key saves its
status and body, and every later request with the same key is answered with them,
whatever they were; a later request with the same key and different parameters is an
error (422 here); a request arriving while the first is still executing is refused (409);
nothing is saved when the request never started executing (refused as invalid input, or
rate-limited), so the same key may be sent again; keys are forgotten after 24 hours.
Keys belong to one user: two users never see each other's.

How it holds under concurrency and crashes:

1. :func:`idempotent_request_begin` commits a claim on ``(owner, key)`` (a unique row
   in progress, with a fresh ``claim`` id), or answers from the row that is there.
2. The caller does the work and :func:`idempotent_request_complete` stores the response
   *in the same transaction as the work*, conditional on still holding the claim. So the
   generation exists exactly when the saved response does.
3. A claim left in progress by a request that died is taken over after
   ``IN_PROGRESS_TAKEOVER``; if the first request was only slow, its completion finds the
   claim gone and raises, rolling its work back: never two generations for one key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from inference.errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyInvalidError,
    IdempotencyKeyReusedError,
)
from inference.models import IdempotentRequest, IdempotentRequestStatus

logger = logging.getLogger("inference.services")

#: How long a key is remembered (Stripe: 24 hours).
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
#: A claim this old is from a request that died; a request executes in well under it.
IN_PROGRESS_TAKEOVER = timedelta(seconds=60)
IDEMPOTENCY_KEY_MAX_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyClaim:
    """This request holds the key: do the work, then complete (or release) the claim."""

    request_id: int
    claim: uuid.UUID


@dataclass(frozen=True)
class IdempotentReplay:
    """The key's first request finished: answer with its response."""

    status: int
    body: Any


def request_fingerprint(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the request's arguments as canonical JSON (key order does not matter)."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key_clean(key: str) -> str:
    """The key as sent, refused when empty, too long or not printable ASCII."""
    if (
        not key
        or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH
        or not key.isascii()
        or not key.isprintable()
    ):
        raise IdempotencyKeyInvalidError(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."
        )
    return key


@transaction.atomic
def idempotent_request_begin(
    *, owner_id: int, key: str, fingerprint: str
) -> IdempotencyClaim | IdempotentReplay:
    """Claim ``key`` for this request, or say how the request that has it answered.

    Raises :class:`IdempotencyKeyReusedError` (another request's key) and
    :class:`IdempotencyKeyInUseError` (the first request is still executing).
    """
    key = idempotency_key_clean(key)
    now = timezone.now()
    claim = uuid.uuid4()
    row = IdempotentRequest.objects.select_for_update().filter(owner_id=owner_id, key=key).first()
    if row is None:
        try:
            with transaction.atomic():
                row = IdempotentRequest.objects.create(
                    owner_id=owner_id,
                    key=key,
                    fingerprint=fingerprint,
                    status=IdempotentRequestStatus.IN_PROGRESS,
                    claim=claim,
                    claimed_at=now,
                    created_at=now,
                )
        except IntegrityError as exc:  # a concurrent first request inserted it just now
            raise IdempotencyKeyInUseError(_IN_USE) from exc
        return IdempotencyClaim(request_id=row.pk, claim=claim)
    if row.created_at <= now - IDEMPOTENCY_KEY_TTL:
        # Expired (the purge job had not run yet): a new key, as if never seen.
        row.fingerprint, row.created_at = fingerprint, now
        row.status, row.response_status, row.response_body = (
            IdempotentRequestStatus.IN_PROGRESS,
            None,
            None,
        )
        row.claim, row.claimed_at = claim, now
        row.save()
        return IdempotencyClaim(request_id=row.pk, claim=claim)
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(
            "This Idempotency-Key was used with a different request. "
            "Use a new key for a new request."
        )
    if row.status == IdempotentRequestStatus.COMPLETED:
        return IdempotentReplay(status=int(row.response_status or 0), body=row.response_body)
    if row.claimed_at > now - IN_PROGRESS_TAKEOVER:
        raise IdempotencyKeyInUseError(_IN_USE)
    logger.warning(
        "idempotency key %s of user %s: taking over a claim its request left", row.pk, owner_id
    )
    row.claim, row.claimed_at = claim, now
    row.save(update_fields=["claim", "claimed_at"])
    return IdempotencyClaim(request_id=row.pk, claim=claim)


_IN_USE = "A request with this Idempotency-Key is still being processed. Retry in a moment."


def idempotent_request_complete(*, claim: IdempotencyClaim, status: int, body: Any) -> None:
    """Save the response for every repeat of the request. Call inside the transaction that
    did the work: when the claim was lost (taken over), raises
    :class:`IdempotencyKeyInUseError` so that the work rolls back with it."""
    updated = IdempotentRequest.objects.filter(
        pk=claim.request_id, claim=claim.claim, status=IdempotentRequestStatus.IN_PROGRESS
    ).update(status=IdempotentRequestStatus.COMPLETED, response_status=status, response_body=body)
    if not updated:
        raise IdempotencyKeyInUseError(_IN_USE)


def idempotent_request_release(*, claim: IdempotencyClaim) -> None:
    """Forget the key: the request did not execute (invalid input, rate-limited, an error),
    so the same key may be sent again."""
    IdempotentRequest.objects.filter(
        pk=claim.request_id, claim=claim.claim, status=IdempotentRequestStatus.IN_PROGRESS
    ).delete()


def idempotent_requests_purge() -> int:
    """Delete keys older than ``IDEMPOTENCY_KEY_TTL`` (the beat job; begin also ignores them)."""
    deleted, _ = IdempotentRequest.objects.filter(
        created_at__lte=timezone.now() - IDEMPOTENCY_KEY_TTL
    ).delete()
    return deleted
