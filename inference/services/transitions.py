"""Every state change of a generation, each a conditional write.

A run is an *attempt*, named by ``attempt_id`` (the id of the task message that
carries it; a retry or a redelivery of the same message is the same attempt).

* ``queued → running`` happens only from ``queued`` (or for the attempt that
  already owns the row, when its message comes back after its worker died).
* Every later write of a run (stage, payment claim/release/confirm, success,
  requeue, failure) is conditional on ``attempt_id``: an attempt that lost the
  row changes nothing, and in particular never undoes another attempt's work
  and never deletes an image another attempt delivered.
* A failure never clears a payment claim. A generation that ends without a
  kept claim goes through :func:`_generation_ended_without_claim` (the one place
  a credit hold is released). A paid one that ends failed with a known
  non-delivery goes through :func:`_generation_paid_not_delivered` (its charge is
  refunded unless ``BILLING_CHARGE_UNDELIVERED``); ``outcome_unknown`` keeps its
  hold for the usage mirror.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from billing.services import (
    generation_charge_refund,
    generation_charge_settle,
    generation_hold_release,
)
from billing.transactions import deadlock_retrying
from inference.errors import PaymentAlreadyClaimedError
from inference.events import generation_changed
from inference.models import (
    IMAGE_EXTENSIONS,
    AdmittedImage,
    FailureCode,
    Generation,
    GenerationStage,
    GenerationStatus,
)
from inference.services.failures import failure_message
from inference.services.webhook_events import generation_event_record
from integrations.livepeer import InferenceResult, PaymentRecord

logger = logging.getLogger("inference.services")

_OUTCOME_UNKNOWN = "outcome_unknown"


def new_attempt_id() -> str:
    """An attempt id for runs that do not come from a task message (commands, tests)."""
    return f"local-{uuid.uuid4()}"


# --- start ---------------------------------------------------------------------


def attempt_start(*, generation_id: str, attempt_id: str, backend_name: str) -> Generation | None:
    """Move the generation to ``running`` for ``attempt_id``; None when this attempt must stop.

    Starts from ``queued``, or resumes a row this same attempt owns (its message was
    redelivered because its worker died). A resumed attempt that had claimed the
    payment never pays again: it ends ``outcome_unknown`` with the claim kept. A row
    started ``INFERENCE_MAX_ATTEMPTS`` times (a worker that keeps dying) ends
    ``interrupted``.
    """
    now = timezone.now()
    ours = Q(status=GenerationStatus.QUEUED) | Q(
        status=GenerationStatus.RUNNING, attempt_id=attempt_id
    )
    generation = _start_returning(
        generation_id=generation_id, attempt_id=attempt_id, backend_name=backend_name, now=now
    )
    if generation is not None:
        generation_changed(
            generation_id=generation_id,
            status=GenerationStatus.RUNNING,
            stage=GenerationStage.AUTHORIZING,
        )
        return generation
    if Generation.objects.filter(
        ours, pk=generation_id, owner__is_active=False, payment_claimed_at__isnull=True
    ).exists():
        # A closed account's work never reaches the signer (its hold is released).
        generation_cancel(generation_id=generation_id, code=FailureCode.ACCOUNT_CLOSED)
        return None
    row = (
        Generation.objects.filter(ours, pk=generation_id)
        .values("payment_claimed_at", "attempts")
        .first()
    )
    if row is None:
        return None  # finished, deleted, or owned by another live attempt
    if row["payment_claimed_at"] is not None:
        # This attempt died after claiming: a ticket may have been spent.
        generation_fail(
            generation_id=generation_id, code=FailureCode.OUTCOME_UNKNOWN, attempt_id=attempt_id
        )
    else:
        logger.error("generation %s: started %d times; giving up", generation_id, row["attempts"])
        generation_fail(
            generation_id=generation_id, code=FailureCode.INTERRUPTED, attempt_id=attempt_id
        )
    return None


def _start_returning(
    *, generation_id: str, attempt_id: str, backend_name: str, now: datetime
) -> Generation | None:
    """``attempt_start``'s conditional UPDATE, returning the started row and its owner's
    ``external_user_id`` in the same statement (``UPDATE … RETURNING``: SQLite ≥ 3.35,
    PostgreSQL; Django's ``update()`` returns only a count). None when nothing matched.

    The owner comes back as a ``User`` with only ``id`` and ``external_user_id`` loaded
    (the rest is deferred: read on access), which is what the run needs to mint its
    credential.
    """
    quote = connection.ops.quote_name
    meta = Generation._meta
    table, users = quote(meta.db_table), quote(User._meta.db_table)
    fields = {field.name: field for field in meta.concrete_fields}
    columns = ", ".join(quote(str(field.column)) for field in fields.values())

    def column(name: str) -> str:
        return quote(str(fields[name].column))

    def db(name: str, value: object) -> object:
        return fields[name].get_db_prep_value(value, connection)

    # Only quoted identifiers from the model's meta are formatted in; values are params.
    sql = (
        f"UPDATE {table} SET {column('status')} = %s, {column('attempt_id')} = %s,"  # noqa: S608
        f" {column('attempts')} = {column('attempts')} + 1,"
        f" {column('started_at')} = COALESCE({column('started_at')}, %s),"
        f" {column('attempt_started_at')} = %s, {column('backend')} = %s,"
        f" {column('stage')} = %s, {column('error_code')} = '', {column('error_message')} = ''"
        f" WHERE {column('id')} = %s"
        f" AND ({column('status')} = %s"
        f" OR ({column('status')} = %s AND {column('attempt_id')} = %s))"
        f" AND {column('payment_claimed_at')} IS NULL AND {column('attempts')} < %s"
        f" AND {column('owner')} IN"
        f" (SELECT {quote('id')} FROM {users} WHERE {quote('is_active')} = %s)"
        f" RETURNING {columns}, (SELECT {quote('external_user_id')} FROM {users}"
        f" WHERE {users}.{quote('id')} = {table}.{column('owner')}) AS owner_external_user_id"
    )
    params = [
        GenerationStatus.RUNNING.value,
        attempt_id,
        db("started_at", now),
        db("attempt_started_at", now),
        backend_name,
        GenerationStage.AUTHORIZING.value,
        db("id", uuid.UUID(str(generation_id))),
        GenerationStatus.QUEUED.value,
        GenerationStatus.RUNNING.value,
        attempt_id,
        settings.INFERENCE_MAX_ATTEMPTS,
        True,
    ]
    started = list(Generation.objects.raw(sql, params))
    if not started:
        return None
    generation = started[0]
    generation.owner = User.from_db(
        connection.alias,
        ["id", "external_user_id"],
        [generation.owner_id, getattr(generation, "owner_external_user_id")],  # noqa: B009
    )
    return generation


def stage_set(*, generation_id: uuid.UUID, attempt_id: str, stage: GenerationStage) -> None:
    if Generation.objects.filter(
        pk=generation_id, attempt_id=attempt_id, status=GenerationStatus.RUNNING
    ).update(stage=stage):
        generation_changed(
            generation_id=generation_id, status=GenerationStatus.RUNNING, stage=stage
        )


# --- payment -------------------------------------------------------------------


class AttemptPaymentGuard:
    """``integrations.livepeer.PaymentGuard`` on the generation row, for one attempt.

    Makes "one ticket per generation" hold across retries, processes and hosts:
    the claim is a conditional UPDATE that only the owning attempt can win, and
    only while no claim is held. ``confirm`` is one durable UPDATE, so the paid call
    goes out right after the ticket; the charge follows (``settle``, issue 16).
    """

    def __init__(
        self, *, generation_id: uuid.UUID, attempt_id: str, owner_id: int, model_id: str
    ) -> None:
        self.generation_id = generation_id
        self.attempt_id = attempt_id
        self.owner_id = owner_id
        self.model_id = model_id
        #: The first payment this attempt confirmed (the one billing charges), and
        #: whether its charge is recorded.
        self.record: PaymentRecord | None = None
        self.settled = False

    def claim(self, *, manifest_id: str | None, runner_url: str | None) -> None:
        claimed = Generation.objects.filter(
            pk=self.generation_id,
            attempt_id=self.attempt_id,
            status=GenerationStatus.RUNNING,
            payment_claimed_at__isnull=True,
            owner__is_active=True,  # a closed account buys no ticket
        ).update(
            payment_claimed_at=timezone.now(),
            manifest_id=manifest_id or "",
            runner_url=runner_url or "",
            stage=GenerationStage.PAYING,
        )
        if not claimed:
            raise PaymentAlreadyClaimedError(
                "this attempt no longer owns the generation, or its payment is already claimed"
            )
        generation_changed(
            generation_id=self.generation_id,
            status=GenerationStatus.RUNNING,
            stage=GenerationStage.PAYING,
        )

    def release(self) -> None:
        if Generation.objects.filter(pk=self.generation_id, attempt_id=self.attempt_id).update(
            payment_claimed_at=None, stage=GenerationStage.CONNECTING
        ):
            generation_changed(
                generation_id=self.generation_id,
                status=GenerationStatus.RUNNING,
                stage=GenerationStage.CONNECTING,
            )

    def confirm(self, record: PaymentRecord) -> None:
        # A paid image must be recorded: the write is re-run if it lost a deadlock.
        confirmed = deadlock_retrying(
            lambda: generation_payment_confirm(
                generation_id=self.generation_id, attempt_id=self.attempt_id, record=record
            ),
            what=f"payment confirm of generation {self.generation_id}",
        )
        if confirmed and self.record is None:
            self.record = record

    def settle(self) -> None:
        """Charge the confirmed payment, in its own transaction, unless already charged
        (idempotent in billing too: the key ``usage_debit:<id>``)."""
        record = self.record
        if record is None or self.settled:
            return
        deadlock_retrying(
            lambda: generation_charge_settle(
                owner_id=self.owner_id,
                generation_id=self.generation_id,
                model_id=self.model_id,
                record=record,
            ),
            what=f"charge of generation {self.generation_id}",
        )
        self.settled = True


def generation_payment_confirm(
    *, generation_id: uuid.UUID, attempt_id: str, record: PaymentRecord
) -> bool:
    """Record what the payment bought, at payment time (the guard's ``confirm``): one
    conditional UPDATE, committed before the paid call goes out. False (and logged)
    when this attempt no longer holds the claim.

    The charge is not made here but right after the paid call, by the same worker:
    in the success write's transaction (:func:`attempt_succeed`), in the failure's
    (:func:`generation_fail`, from the fields recorded here), or by the guard's
    ``settle`` if neither wrote (the row was deleted). A worker that dies in between
    leaves the claim: its redelivered attempt ends ``outcome_unknown`` through
    :func:`generation_fail`, which charges it; the stale-hold sweep covers the rest.
    """
    updated = Generation.objects.filter(
        pk=generation_id, attempt_id=attempt_id, payment_claimed_at__isnull=False
    ).update(
        tickets_paid=F("tickets_paid") + 1,
        manifest_id=record.manifest_id or "",
        runner_url=record.runner_url or "",
        price_wei=record.price_wei,
        price_unit=record.price_unit,
        units_paid=record.units_paid,
        expected_fee_wei=record.expected_fee_wei,
        stage=GenerationStage.GENERATING,
    )
    if updated:
        generation_changed(
            generation_id=generation_id,
            status=GenerationStatus.RUNNING,
            stage=GenerationStage.GENERATING,
        )
    else:
        # The hold stays open: the usage mirror or the stale-hold sweep resolves it.
        logger.error(
            "generation %s: payment confirmed for attempt %s, which no longer holds the claim",
            generation_id,
            attempt_id,
        )
    return bool(updated)


def _recorded_payment(generation: Generation) -> PaymentRecord:
    """The payment a confirmed generation recorded (``generation_payment_confirm``)."""
    return PaymentRecord(
        manifest_id=generation.manifest_id or None,
        runner_url=generation.runner_url or None,
        price_wei=generation.price_wei,
        price_unit=generation.price_unit,
        units_paid=generation.units_paid,
        expected_fee_wei=generation.expected_fee_wei,
    )


# --- outcomes ------------------------------------------------------------------


def attempt_succeed(
    *,
    generation: Generation,
    attempt_id: str,
    result: InferenceResult,
    guard: AttemptPaymentGuard | None = None,
) -> Generation:
    """Store the image and mark the generation succeeded, if this attempt still owns it.

    ``failed`` is accepted too: a paid image that arrives after reconcile gave up on
    this attempt still reaches the user. Otherwise (deleted, or another attempt owns
    the row) only the file this call wrote is removed, never one already delivered.

    The payment ``guard`` confirmed is charged in the success write's transaction. The
    ``saving`` stage is published, not written, and the returned ``generation`` carries
    what the success write stored without re-reading the row (its payment fields are as
    the run started).
    """
    image = result.images[0]
    # Published, not written: only watchers see this short step (the success write
    # below ends it); a re-read never shows a watcher an earlier stage (inference.events).
    generation_changed(
        generation_id=generation.pk, status=GenerationStatus.RUNNING, stage=GenerationStage.SAVING
    )
    extension = IMAGE_EXTENSIONS.get(image.content_type, "png")
    generation.image.save(f"{generation.pk}.{extension}", ContentFile(image.content), save=False)
    stored_name: str = generation.image.name or ""
    try:
        updated = deadlock_retrying(
            lambda: _success_write_and_charge(generation, attempt_id, result, stored_name, guard),
            what=f"success of generation {generation.pk}",
        )
    except Exception:
        # The run ends outcome_unknown (run.py); the paid image stays on disk for support.
        logger.warning(
            "generation %s: success not recorded; image kept at %s", generation.pk, stored_name
        )
        raise
    if not updated:
        delivered = Generation.objects.filter(pk=generation.pk).values_list("image", flat=True)
        if stored_name and stored_name not in delivered:
            generation.image.storage.delete(stored_name)
        logger.warning(
            "generation %s: attempt %s lost the row; result dropped", generation.pk, attempt_id
        )
        return generation
    generation_changed(
        generation_id=generation.pk, status=GenerationStatus.SUCCEEDED, stage=GenerationStage.DONE
    )
    # What the success write stored, set here instead of re-reading the row.
    _success_apply(generation, result, stored_name)
    logger.info("generation %s succeeded", generation.pk)
    return generation


@transaction.atomic
def _success_write_and_charge(
    generation: Generation,
    attempt_id: str,
    result: InferenceResult,
    stored_name: str,
    guard: AttemptPaymentGuard | None,
) -> int:
    """The success write, then the charge of the confirmed payment (lock order: the
    generation row, then the account, as everywhere)."""
    updated = _success_write(generation, attempt_id, result, stored_name)
    if guard is not None and guard.record is not None:
        generation_charge_settle(
            owner_id=guard.owner_id,
            generation_id=guard.generation_id,
            model_id=guard.model_id,
            record=guard.record,
        )
        transaction.on_commit(lambda: setattr(guard, "settled", True))
    if updated:  # after the charge: the event carries the generation with its money
        generation_event_record(generation_id=generation.pk, owner_id=generation.owner_id)
    return updated


def _success_apply(generation: Generation, result: InferenceResult, stored_name: str) -> None:
    """Set on ``generation`` what :func:`_success_write` stored (its ``finished_at`` is
    the one recorded there)."""
    image = result.images[0]
    generation.status = GenerationStatus.SUCCEEDED
    generation.stage = GenerationStage.DONE
    generation.image.name = stored_name
    generation.image_seed = image.seed
    generation.nsfw = image.nsfw
    generation.upstream_request_id = result.upstream_request_id or ""
    generation.manifest_id = result.manifest_id or generation.manifest_id
    generation.runner_url = result.runner_url or generation.runner_url
    generation.error_code = ""
    generation.error_message = ""


def _success_write(
    generation: Generation, attempt_id: str, result: InferenceResult, stored_name: str
) -> int:
    image = result.images[0]
    generation.finished_at = timezone.now()
    return Generation.objects.filter(
        pk=generation.pk,
        attempt_id=attempt_id,
        status__in=[GenerationStatus.RUNNING, GenerationStatus.FAILED],
    ).update(
        status=GenerationStatus.SUCCEEDED,
        stage=GenerationStage.DONE,
        image=stored_name,
        image_seed=image.seed,
        nsfw=image.nsfw,
        upstream_request_id=result.upstream_request_id or "",
        manifest_id=result.manifest_id or F("manifest_id"),
        runner_url=result.runner_url or F("runner_url"),
        error_code="",
        error_message="",
        finished_at=generation.finished_at,
    )


def attempt_requeue(*, generation_id: uuid.UUID, attempt_id: str, code: FailureCode) -> bool:
    """Back to ``queued`` after a retryable error before any payment; False if not ours."""
    requeued = Generation.objects.filter(
        pk=generation_id,
        attempt_id=attempt_id,
        status=GenerationStatus.RUNNING,
        payment_claimed_at__isnull=True,
    ).update(
        status=GenerationStatus.QUEUED,
        attempt_id="",
        stage=GenerationStage.RETRYING,
        error_code=code,
        enqueued_at=timezone.now(),
    )
    if requeued:
        generation_changed(
            generation_id=generation_id,
            status=GenerationStatus.QUEUED,
            stage=GenerationStage.RETRYING,
        )
    return bool(requeued)


def generation_fail(
    *,
    generation_id: str | uuid.UUID,
    code: FailureCode,
    detail: str | None = None,
    attempt_id: str | None = None,
    code_if_claimed: FailureCode | None = None,
) -> bool:
    """Record a terminal failure unless the generation already finished; True if recorded.

    With ``attempt_id``, only a row that attempt owns (or a queued row, which nobody
    owns) is touched. A held payment claim is kept (billing resolves it from usage);
    ``code_if_claimed`` replaces ``code`` when one is held.
    """
    with transaction.atomic():
        generation = Generation.objects.select_for_update().filter(pk=generation_id).first()
        if generation is None or generation.is_finished:
            return False
        if attempt_id is not None and not (
            generation.status == GenerationStatus.QUEUED or generation.attempt_id == attempt_id
        ):
            return False
        claimed = generation.payment_claimed_at is not None
        if claimed and code_if_claimed:
            code = code_if_claimed
        refund = claimed and code != _OUTCOME_UNKNOWN and not settings.BILLING_CHARGE_UNDELIVERED
        generation.status = GenerationStatus.FAILED
        generation.stage = GenerationStage.DONE
        generation.error_code = code
        generation.error_message = failure_message(code, detail, refunded=refund)
        generation.finished_at = timezone.now()
        generation.save(
            update_fields=["status", "stage", "error_code", "error_message", "finished_at"]
        )
        if claimed and generation.tickets_paid:
            # A confirmed payment is charged before anything is refunded (the debit stays
            # for staff beside the refund); a no-op when it was charged already.
            generation_charge_settle(
                owner_id=generation.owner_id,
                generation_id=generation.pk,
                model_id=generation.model_id,
                record=_recorded_payment(generation),
            )
        generation_changed(
            generation_id=generation.pk, status=generation.status, stage=generation.stage
        )
        if not claimed:
            _generation_ended_without_claim(generation_id=generation.pk, reason=code)
        elif refund:
            _generation_paid_not_delivered(
                generation_id=generation.pk, owner_id=generation.owner_id, reason=code
            )
        generation_event_record(generation_id=generation.pk)
    return True


def generation_cancel(*, generation_id: str | uuid.UUID, code: FailureCode) -> bool:
    """End a generation that holds no payment claim as ``canceled``; True if it did.

    A finished or claimed generation is left alone (a claimed one may have bought its
    ticket: it finishes, and billing settles it as usual). The hold is released.
    """
    with transaction.atomic():
        generation = Generation.objects.select_for_update().filter(pk=generation_id).first()
        if generation is None or generation.is_finished or generation.payment_claimed_at:
            return False
        generation.status = GenerationStatus.CANCELED
        generation.stage = GenerationStage.DONE
        generation.error_code = code
        generation.error_message = failure_message(code)
        generation.finished_at = timezone.now()
        generation.save(
            update_fields=["status", "stage", "error_code", "error_message", "finished_at"]
        )
        generation_changed(
            generation_id=generation.pk, status=generation.status, stage=generation.stage
        )
        _generation_ended_without_claim(generation_id=generation.pk, reason=code)
        generation_event_record(generation_id=generation.pk)
    logger.info("generation %s canceled (%s)", generation.pk, code)
    return True


def generations_cancel_for_closed_owner(*, user_id: int) -> int:
    """Cancel every unfinished, unclaimed generation of a deactivated or deleted user.

    Runs inside the transaction that closed the account (``accounts.hooks``); a worker
    that already started one finds it canceled at its payment claim and buys nothing.
    """
    ids = list(
        Generation.objects.filter(
            owner_id=user_id,
            status__in=[GenerationStatus.QUEUED, GenerationStatus.RUNNING],
            payment_claimed_at__isnull=True,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return sum(generation_cancel(generation_id=pk, code=FailureCode.ACCOUNT_CLOSED) for pk in ids)


def generation_fail_unexpected(*, generation_id: str | uuid.UUID, attempt_id: str | None) -> bool:
    """Terminal record of an exception nobody anticipated (a bug, a DataError, bad config).

    After a payment claim it is ``outcome_unknown`` (claim kept: never pay again);
    before, ``internal_error``. The user message says nothing internal.
    """
    return generation_fail(
        generation_id=generation_id,
        code=FailureCode.INTERNAL_ERROR,
        code_if_claimed=FailureCode.OUTCOME_UNKNOWN,
        attempt_id=attempt_id,
    )


def _generation_paid_not_delivered(*, generation_id: uuid.UUID, owner_id: int, reason: str) -> None:
    """A paid generation ended failed with a known non-delivery (not ``outcome_unknown``)
    and ``BILLING_CHARGE_UNDELIVERED`` is off. Runs inside the transaction that ends it.

    Billing credits back what it charged (or releases the hold if the payment was never
    confirmed): ``generation_charge_refund``. The usage debit stays for staff.
    """
    generation_charge_refund(owner_id=owner_id, generation_id=generation_id, reason=reason)
    logger.info(
        "generation %s: paid but not delivered (%s); charge refunded", generation_id, reason
    )


def _generation_ended_without_claim(*, generation_id: uuid.UUID, reason: str) -> None:
    """The one place a generation ends holding no payment claim (failed before paying,
    or deleted while queued). Runs inside the transaction that ends it.

    Billing releases the credit hold here:
    ``generation_hold_release(generation_id=generation_id, reason=reason)``; its
    admission record stops counting (``AdmittedImage.counts``).
    """
    generation_hold_release(generation_id=generation_id, reason=reason)
    # Nothing was paid: the image no longer counts against a monthly allowance or cap.
    AdmittedImage.objects.filter(generation_id=generation_id).update(counts=False)
    logger.debug("generation %s ended without a payment claim (%s)", generation_id, reason)
