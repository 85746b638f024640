"""Completion events: a generation's terminal state, sent to its owner's webhook endpoint.

:func:`generation_event_record` is called inside the transaction that ends a generation
(``transitions.py``), after billing has settled, refunded or released in it: the event's
``data`` is the generation resource as ``GET /api/v1/generations/{id}`` answers it then
(money included). The send leaves after commit (``accounts.webhooks``).
"""

from __future__ import annotations

import uuid

from accounts.webhooks import webhook_endpoint_exists, webhook_event_record
from inference.models import Generation, GenerationStatus

#: Event types, one per terminal status.
EVENT_TYPES = {
    GenerationStatus.SUCCEEDED: "generation.succeeded",
    GenerationStatus.FAILED: "generation.failed",
    GenerationStatus.CANCELED: "generation.canceled",
}


def generation_event_record(*, generation_id: uuid.UUID | str, owner_id: int | None = None) -> None:
    """Record the terminal event of ``generation_id`` for its owner's endpoint, if any.

    With ``owner_id`` (the caller knows it) an owner without an endpoint costs one query:
    the generation is read and its resource built only for an owner who will receive it.
    """
    # Imported here: the resource reads inference.services, which imports this module.
    from inference.resources import generation_json

    if owner_id is not None and not webhook_endpoint_exists(user_id=owner_id):
        return
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is None or generation.status not in EVENT_TYPES:
        return
    webhook_event_record(
        user_id=generation.owner_id,
        event_type=EVENT_TYPES[GenerationStatus(generation.status)],
        subject_id=str(generation.pk),
        data=lambda: generation_json(generation),
    )
