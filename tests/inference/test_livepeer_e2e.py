"""End to end through a real worker against the strict sandbox: what each runner costs,
and that untrusted answers never cost a second ticket (issue 6 §3, issue 7 §2-3).

Every test reads the sandbox's own logs: the signer's usage events (one per ticket,
joined on the manifest id) and the requests each upstream saw.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from inference.models import Generation, GenerationStatus
from inference.services import generation_create
from tests.factories import UserFactory
from tests.helpers import png_size, read, wait_for
from tests.integrations.livepeer.conftest import RUNNER_1, RUNNER_1_ID, set_runner, set_runners
from tests.sandbox_server import SandboxControl
from tests.worker import WorkerProcess, running_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PAYMENT = "/signer/generate-live-payment"


def _run(user: Any, **fields: Any) -> Generation:
    params = {"prompt": "a lighthouse at dusk", "width": 512, "height": 384, "seed": 7, **fields}
    generation = generation_create(owner=user, **params)
    wait_for(lambda: Generation.objects.get(pk=generation.pk).is_finished, timeout=30)
    return Generation.objects.get(pk=generation.pk)


def _payments(sandbox: SandboxControl) -> list[int]:
    return [r["status"] for r in sandbox.requests(PAYMENT)]


@pytest.mark.parametrize(
    ("unit", "price", "units", "fee"),
    [
        ("fixed", 4_768_371_000_000, 1, 4_768_371_000_000),
        ("fixed", 2**64 + 1, 1, 2**64 + 1),
        ("seconds", 1_000_000_000_007, 10, 10_000_000_000_070),
    ],
    ids=["fixed", "fixed-above-2-64", "seconds"],
)
def test_success_records_the_runner_price_and_the_exact_expected_fee(
    sandbox: SandboxControl,
    worker_process: WorkerProcess,
    unit: str,
    price: int,
    units: int,
    fee: int,
) -> None:
    set_runners(sandbox, unit=unit, price=str(price))
    user = UserFactory()

    generation = _run(user)

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert (generation.price_wei, generation.price_unit) == (price, unit)
    assert (generation.units_paid, generation.expected_fee_wei) == (units, fee)
    assert generation.tickets_paid == 1
    # Missing slash handled: published ".../app", called ".../app/", never a 301.
    assert generation.runner_url == f"{sandbox.url}{RUNNER_1}"
    assert [r for r in sandbox.requests() if r["path"] == RUNNER_1.rstrip("/")] == []
    assert 301 not in [r["status"] for r in sandbox.requests("/apps/")]
    [event] = sandbox.events()
    assert event["manifestId"] == generation.manifest_id
    assert event["feeWei"] == str(fee)
    assert event["externalUserId"] == user.external_user_id

    # The detail page shows what was paid, exactly.
    client = Client()
    client.force_login(user)
    page = client.get(reverse("inference:detail", args=[generation.pk])).content.decode()
    assert f"{price:,} wei" in page
    assert f"{fee:,} wei" in page
    assert generation.manifest_id in page
    assert unit in page


def test_refresh_480_pays_once_on_a_fresh_challenge(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    sandbox.add_fault("POST", PAYMENT, status=480, body={"error": {"message": "refresh"}}, times=1)

    generation = _run(UserFactory())

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert _payments(sandbox) == [480, 200]
    assert [r["status"] for r in sandbox.requests(RUNNER_1)] == [402, 402, 200]
    [event] = sandbox.events()
    assert event["manifestId"] == generation.manifest_id
    assert [r for r in sandbox.requests() if "refresh-payment" in r["path"]] == []


def test_consumed_payment_is_never_sent_again_and_no_second_ticket_is_bought(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    # The orchestrator processes the payment, then the app drops the connection.
    set_runner(sandbox, RUNNER_1_ID, appFault={"kind": "drop"})

    generation = _run(UserFactory())

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert generation.tickets_paid == 1
    assert generation.payment_claimed_at is not None
    assert generation.expected_fee_wei == 4_768_371_000_000
    assert _payments(sandbox) == [200]
    assert len(sandbox.requests(RUNNER_1)) == 2  # the challenge and ONE paid send
    assert len(sandbox.events()) == 1


@pytest.mark.parametrize("status", [500, 502])
def test_signer_5xx_after_sending_is_outcome_unknown_with_the_claim_kept(
    sandbox: SandboxControl, worker_process: WorkerProcess, status: int
) -> None:
    sandbox.add_fault(
        "POST", PAYMENT, status=status, body={"error": {"message": "Internal Server Error"}}
    )

    generation = _run(UserFactory())

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "outcome_unknown",
    )
    assert generation.payment_claimed_at is not None  # the claim is kept
    assert generation.manifest_id != ""  # stored at claim: the join key for billing
    assert generation.tickets_paid == 0
    assert _payments(sandbox) == [status]  # no second ticket asked for, no retry
    assert [r["status"] for r in sandbox.requests(RUNNER_1)] == [402]


def test_over_long_manifest_id_is_refused_before_the_claim(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    set_runners(sandbox, manifestIdLength=202)

    generation = _run(UserFactory())

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert generation.payment_claimed_at is None
    assert generation.manifest_id == ""
    assert sandbox.requests(PAYMENT) == []
    assert sandbox.events() == []


@pytest.mark.parametrize(
    ("fault", "settings_env"),
    [
        ({"kind": "oversized", "bytes": 3_000_000}, {"LIVEPEER_MAX_IMAGE_BYTES": "500000"}),
        ({"kind": "wrong-size"}, {}),
    ],
    ids=["oversized-body", "wrong-size"],
)
def test_untrusted_result_is_refused_after_one_ticket(
    sandbox: SandboxControl,
    transactional_db: Any,
    fault: dict[str, Any],
    settings_env: dict[str, str],
) -> None:
    set_runner(sandbox, RUNNER_1_ID, appFault=fault)
    with running_worker(name="untrusted", env=settings_env):
        generation = _run(UserFactory())

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert not generation.image
    assert generation.tickets_paid == 1
    assert _payments(sandbox) == [200]
    assert len(sandbox.events()) == 1


def test_runner_on_a_private_address_is_refused_in_production_settings(
    sandbox: SandboxControl, transactional_db: Any
) -> None:
    with running_worker(name="production", env={"TEST_LIVEPEER_ALLOW_PRIVATE_ADDRESSES": "false"}):
        generation = _run(UserFactory())

    assert (generation.status, generation.error_code) == (
        GenerationStatus.FAILED,
        "upstream_failed",
    )
    assert generation.payment_claimed_at is None
    assert sandbox.requests("/apps/") == []
    assert sandbox.requests(PAYMENT) == []
    assert sandbox.events() == []


def test_jpeg_is_stored_and_served_as_jpeg(
    sandbox: SandboxControl, worker_process: WorkerProcess
) -> None:
    set_runners(sandbox, appFault={"kind": "jpeg"})
    user = UserFactory()

    generation = _run(user)

    assert generation.status == GenerationStatus.SUCCEEDED, generation.error_message
    assert generation.image.name.endswith(f"{generation.pk}.jpg")
    assert read(generation.image.path).startswith(b"\xff\xd8\xff")
    client = Client()
    client.force_login(user)
    response = client.get(reverse("inference:image", args=[generation.pk]) + "?download=1")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert ".jpg" in response["Content-Disposition"]
    assert b"".join(response.streaming_content).startswith(b"\xff\xd8\xff")  # type: ignore[attr-defined]


def test_png_is_still_served_as_png(sandbox: SandboxControl, worker_process: WorkerProcess) -> None:
    user = UserFactory()

    generation = _run(user)

    client = Client()
    client.force_login(user)
    response = client.get(reverse("inference:image", args=[generation.pk]))
    assert response["Content-Type"] == "image/png"
    assert png_size(b"".join(response.streaming_content)) == (512, 384)  # type: ignore[attr-defined]
