"""Per-user credentials under concurrency (issue 15 §15): 50 generations at once, two users.

Every attempt mints its own signer credential; the process-wide pymthouse and Livepeer
clients (HTTP pools, discovery and payer-address caches) are shared by all threads. The
sandbox attributes each signer request and each usage event to the ``external_user_id``
of the bearer it carried, so a credential leaking between concurrent attempts would
show up there as a ticket charged to the wrong user.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connections

from inference.models import Generation, GenerationStatus
from inference.services import generation_create, generation_run
from tests.inference.paying_user import pay_as_you_go_user
from tests.sandbox_server import SandboxControl

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 50
PAYMENT = "/signer/generate-live-payment"
DISCOVER = "/signer/discover-orchestrators"
MINT = "/api/v1/oidc/token"


def test_fifty_concurrent_generations_alternating_users_each_pay_with_their_own_token(
    sandbox: SandboxControl, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.INFERENCE_MAX_ACTIVE_PER_USER = CONCURRENT
    settings.INFERENCE_RATE_LIMIT_COUNT = CONCURRENT
    with django_capture_on_commit_callbacks(execute=True):  # provisioned at the sandbox
        users = [pay_as_you_go_user(), pay_as_you_go_user()]  # credit for 50 holds each
    sandbox.set_config(runnerLatencySeconds=0.3)  # keeps many attempts in flight at once
    generations = [
        generation_create(
            owner=users[index % 2],
            prompt=f"a lighthouse {index}",
            width=256,
            height=256,
            seed=index,
            enqueue=False,
        )
        for index in range(CONCURRENT)
    ]
    sandbox.clear_requests()
    barrier = threading.Barrier(CONCURRENT)
    outcomes: dict[str, object] = {}

    def attempt(generation_id: str) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[generation_id] = generation_run(generation_id=generation_id)
        except Exception as exc:
            outcomes[generation_id] = exc
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=attempt, args=(str(generation.pk),), daemon=True)
        for generation in generations
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(thread.is_alive() for thread in threads)
    errors = {
        gid: repr(outcome) for gid, outcome in outcomes.items() if isinstance(outcome, Exception)
    }
    assert errors == {}
    rows = {str(row.pk): row for row in Generation.objects.filter(pk__in=outcomes)}
    assert Counter(row.status for row in rows.values()) == {GenerationStatus.SUCCEEDED: CONCURRENT}
    owner_of = {row.manifest_id: row.owner.external_user_id for row in rows.values()}
    assert len(owner_of) == CONCURRENT  # one distinct manifest per generation
    # Each ticket was charged to the owner of the generation that paid for it.
    events = sandbox.events()
    assert len(events) == CONCURRENT
    assert {event["manifestId"]: event["externalUserId"] for event in events} == owner_of
    # Every signer call carried one of the two users' tokens, half each, one per attempt.
    ids = [user.external_user_id for user in users]
    for path in (PAYMENT, DISCOVER):
        calls = sandbox.requests(path)
        assert Counter(call["externalUserId"] for call in calls) == {
            ids[0]: CONCURRENT // 2,
            ids[1]: CONCURRENT // 2,
        }
        assert {call["status"] for call in calls} == {200}
        assert {call["clientId"] for call in calls} == {sandbox.config()["appId"]}
    mints = sandbox.requests(MINT)
    assert [(m["status"], m["auth"]) for m in mints] == [(200, "basic")] * CONCURRENT
