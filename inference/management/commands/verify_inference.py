"""One inference verification call against whatever pymthouse is configured.

Runs a single generation inline (no worker needed) for a given or seeded user
and prints the outcome, the stored image and the upstream request ids.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from inference.errors import GenerationError, GenerationRetryableError
from inference.models import Generation, GenerationStatus
from inference.services import generation_create, generation_run


def _wei(value: int | None) -> str:
    return "-" if value is None else f"{value} wei"


class Command(BaseCommand):
    help = "Generate one image through pymthouse + Livepeer and print the result."

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--email", help="user to bill (default: the seeded alice@example.com)")
        who.add_argument("--external-user-id", help="user to bill, by pymthouse externalUserId")
        parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk, oil painting")
        parser.add_argument("--model", default=None, help="model id (default: the first allowed)")
        parser.add_argument("--size", default="512x512", help="WIDTHxHEIGHT, multiples of 8")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--backend",
            choices=["live-runner", "ai-gateway"],
            default=None,
            help=f"default: INFERENCE_BACKEND ({settings.INFERENCE_BACKEND})",
        )

    def _user(self, options: dict[str, Any]) -> User:
        if options["external_user_id"]:
            user = User.objects.filter(external_user_id=options["external_user_id"]).first()
        else:
            user = User.objects.filter(email=options["email"] or "alice@example.com").first()
        if user is None:
            raise CommandError("No such user. Run `manage.py seed_demo` or pass --email.")
        return user

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options)
        try:
            width, height = (int(part) for part in options["size"].lower().split("x"))
        except ValueError as exc:
            raise CommandError("--size must look like 512x512") from exc
        backend = options["backend"] or settings.INFERENCE_BACKEND
        self.stdout.write(
            f"pymthouse {settings.PYMTHOUSE_URL} · backend {backend} · user {user.email} "
            f"({user.external_user_id})"
        )
        try:
            generation = generation_create(
                owner=user,
                prompt=options["prompt"],
                model_id=options["model"],
                width=width,
                height=height,
                seed=options["seed"],
                enqueue=False,
            )
        except GenerationError as exc:
            raise CommandError(f"{exc.code}: {exc.message} {exc.extra or ''}") from exc
        started = time.monotonic()
        try:
            generation_run(generation_id=str(generation.pk), backend_name=backend)
        except GenerationRetryableError as exc:
            raise CommandError(f"upstream unavailable, try again: {exc.__cause__}") from exc
        elapsed = time.monotonic() - started
        generation = Generation.objects.get(pk=generation.pk)
        self._report(generation, elapsed)
        if generation.status != GenerationStatus.SUCCEEDED:
            raise CommandError(f"generation {generation.status}: {generation.error_code}")

    def _report(self, generation: Generation, elapsed: float) -> None:
        rows = [
            ("status", generation.status),
            ("generation id", str(generation.pk)),
            ("model", generation.model_id),
            ("size", f"{generation.width}x{generation.height}"),
            ("seed", str(generation.image_seed if generation.image_seed is not None else "-")),
            ("image", generation.image.path if generation.image else "-"),
            ("runner", generation.runner_url or "-"),
            ("manifest id (usage join key)", generation.manifest_id or "-"),
            ("runner price unit", generation.price_unit or "-"),
            ("runner price", _wei(generation.price_wei)),
            ("units paid", "-" if generation.units_paid is None else str(generation.units_paid)),
            ("expected fee", _wei(generation.expected_fee_wei)),
            ("upstream request id", generation.upstream_request_id or "-"),
            ("tickets paid", str(generation.tickets_paid)),
            ("elapsed", f"{elapsed:.2f}s"),
        ]
        if generation.error_code:
            rows.append(("error", f"{generation.error_code}: {generation.error_message}"))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"  {label.ljust(width)}  {value}")
        if generation.status == GenerationStatus.SUCCEEDED:
            self.stdout.write(
                self.style.SUCCESS(
                    "OK. Usage appears in pymthouse's usage API under this user "
                    "(groupBy=manifest, manifestId = the manifest id above) once metered."
                )
            )
