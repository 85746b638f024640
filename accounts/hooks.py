"""Extension points of the accounts app for the apps above it.

accounts imports none of the apps that build on it; an app that keeps a copy of account
data registers a callback here from its ``AppConfig.ready()`` instead (the usage mirror
keeps each user's e-mail on its staff table: ``usage.apps``).
"""

from __future__ import annotations

from collections.abc import Callable

#: ``hook(user_id=…, email=…)``: called inside the transaction that changed the e-mail.
EmailChangedHook = Callable[..., None]

_email_changed_hooks: list[EmailChangedHook] = []


def email_changed_hook_register(hook: EmailChangedHook) -> None:
    """Register ``hook`` once (``ready()`` may run more than once in tests)."""
    if hook not in _email_changed_hooks:
        _email_changed_hooks.append(hook)


def email_changed_notify(*, user_id: int, email: str) -> None:
    """Tell every registered app that ``user_id``'s e-mail is now ``email``."""
    for hook in _email_changed_hooks:
        hook(user_id=user_id, email=email)
