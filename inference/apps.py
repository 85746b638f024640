from __future__ import annotations

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Image generation"

    def ready(self) -> None:
        from accounts.hooks import account_closed_hook_register
        from inference.services.transitions import generations_cancel_for_closed_owner

        account_closed_hook_register(generations_cancel_for_closed_owner)
