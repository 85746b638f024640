from __future__ import annotations

from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Image generation"

    def ready(self) -> None:
        from accounts.hooks import account_closed_hook_register
        from billing.hooks import (
            generations_existing_checker_register,
            images_per_day_counter_register,
            images_this_month_counter_register,
        )
        from inference.selectors import (
            admitted_images_per_day,
            generations_counted_this_month,
            generations_existing,
        )
        from inference.services.transitions import generations_cancel_for_closed_owner

        account_closed_hook_register(generations_cancel_for_closed_owner)
        images_this_month_counter_register(generations_counted_this_month)
        images_per_day_counter_register(admitted_images_per_day)
        generations_existing_checker_register(generations_existing)
