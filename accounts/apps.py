from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from allauth.account.signals import email_changed

        from accounts import checks  # noqa: F401  (registers the system checks)
        from accounts.services import user_email_changed
        from integrations.pymthouse import checks as pymthouse_checks  # noqa: F401  (same)

        email_changed.connect(user_email_changed, dispatch_uid="accounts-email-changed")
