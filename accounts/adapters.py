"""django-allauth adapters: every new user goes through the service layer.

Account linking rule (OIDC Core §5.7; allauth's "email authentication" is off): an SSO
login whose (issuer, subject) is unknown but whose e-mail belongs to an existing local
account never signs into that account and never creates a second one. The person is
sent to sign in to the existing account first and link the provider there.
"""

from __future__ import annotations

import logging
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.account.models import EmailAddress
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from allauth.socialaccount.providers.base.constants import AuthProcess
from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.shortcuts import redirect

from accounts.models import User
from accounts.services import user_register

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    def save_user(self, request: HttpRequest, user: User, form: Any, commit: bool = True) -> User:
        saved: User = super().save_user(request, user, form, commit=False)
        if commit:
            user_register(user=saved)
        return saved


def _emails_of(sociallogin: SocialLogin) -> set[str]:
    emails = {address.email.lower() for address in sociallogin.email_addresses if address.email}
    if sociallogin.user is not None and sociallogin.user.email:
        emails.add(sociallogin.user.email.lower())
    return emails


class SocialAccountAdapter(DefaultSocialAccountAdapter):  # type: ignore[misc]
    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        if sociallogin.is_existing:
            return  # a known (issuer, subject): its own account
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            return  # a signed-in person linking this provider to their account
        if _belongs_to_existing_account(_emails_of(sociallogin)):
            provider = sociallogin.provider.name
            logger.warning(
                "SSO via %s refused: its e-mail belongs to an existing account",
                sociallogin.account.provider,
            )
            messages.error(
                request,
                f"An account with this e-mail address already exists. Sign in to it first, "
                f"then link {provider} under Account → Connected accounts.",
            )
            raise ImmediateHttpResponse(redirect("account_login"))

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Any = None) -> User:
        user: User = sociallogin.user
        user.set_unusable_password()
        account_adapter = get_account_adapter(request)
        with transaction.atomic():
            if form:
                account_adapter.save_user(request, user, form, commit=False)
            user_register(user=user)
            sociallogin.save(request)
        return user


def _belongs_to_existing_account(emails: set[str]) -> bool:
    if not emails:
        return False
    users, addresses = Q(), Q()
    for email in emails:
        users |= Q(email__iexact=email)
        addresses |= Q(email__iexact=email)
    return User.objects.filter(users).exists() or EmailAddress.objects.filter(addresses).exists()
