"""Extension points of the accounts app for the apps above it.

accounts imports none of the apps that build on it; an app that keeps a copy of account
data registers a callback here from its ``AppConfig.ready()`` instead (the usage mirror
keeps each user's e-mail on its staff table: ``usage.apps``; inference cancels a closed
account's queued work: ``inference.apps``; billing opens a registered user's account:
``billing.apps``).
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


#: ``hook(user_id=…)``: called inside the transaction that deactivated or deleted the user.
AccountClosedHook = Callable[..., object]

_account_closed_hooks: list[AccountClosedHook] = []


def account_closed_hook_register(hook: AccountClosedHook) -> None:
    """Register ``hook`` once (``ready()`` may run more than once in tests)."""
    if hook not in _account_closed_hooks:
        _account_closed_hooks.append(hook)


def account_closed_notify(*, user_id: int) -> None:
    """Tell every registered app that ``user_id`` was deactivated or deleted."""
    for hook in _account_closed_hooks:
        hook(user_id=user_id)


#: ``hook(user_id=…)``: called inside the transaction that registered a new user.
UserRegisteredHook = Callable[..., object]

_user_registered_hooks: list[UserRegisteredHook] = []


def user_registered_hook_register(hook: UserRegisteredHook) -> None:
    """Register ``hook`` once (``ready()`` may run more than once in tests)."""
    if hook not in _user_registered_hooks:
        _user_registered_hooks.append(hook)


def user_registered_notify(*, user_id: int) -> None:
    """Tell every registered app that ``user_id`` was just registered."""
    for hook in _user_registered_hooks:
        hook(user_id=user_id)
