"""django-allauth adapters: every signup path goes through the service layer."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpRequest

from accounts.models import User
from accounts.services import user_provision_schedule


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    def save_user(self, request: HttpRequest, user: User, form: Any, commit: bool = True) -> User:
        saved: User = super().save_user(request, user, form, commit=commit)
        if commit:
            user_provision_schedule(user=saved)
        return saved


class SocialAccountAdapter(DefaultSocialAccountAdapter):  # type: ignore[misc]
    def save_user(self, request: HttpRequest, sociallogin: Any, form: Any = None) -> User:
        saved: User = super().save_user(request, sociallogin, form=form)
        user_provision_schedule(user=saved)
        return saved
