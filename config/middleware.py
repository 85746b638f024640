"""Middleware of the project itself.

:class:`UserSessionsMiddleware` is allauth's (``allauth.usersessions.middleware``), which
saves the session's row (``last_seen_at``, IP, user agent) on every request, minus that
write on the reads a page or client repeats while it waits for a generation: the plain
status read, the long poll and the event stream (``inference.api``). Those reads then
write nothing at all (tests/config/test_middleware.py counts it). Every other request,
including the page that started the wait, still records the session's activity.
"""

from __future__ import annotations

import re
from datetime import timedelta

from allauth.account.adapter import get_adapter
from allauth.usersessions.middleware import UserSessionsMiddleware as AllauthUserSessions
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

#: GET/HEAD paths that are polled: ``/api/v1/generations/{id}``, ``…/next``, ``…/events``.
UNTRACKED_READS = re.compile(r"^/api/v1/generations/[0-9a-fA-F-]{32,36}(?:/next|/events)?$")


def _untracked(request: HttpRequest) -> bool:
    return request.method in ("GET", "HEAD") and bool(UNTRACKED_READS.match(request.path_info))


def _seen_recently(request: HttpRequest) -> bool:
    """True when this signed-in session's row was written within the interval, from the
    same IP address and user agent (as allauth would write them: ``create_from_request``)."""
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    if user is None or not user.is_authenticated or session is None or not session.session_key:
        return False
    interval = settings.USERSESSIONS_ACTIVITY_INTERVAL_SECONDS
    if interval <= 0:
        return False
    row = (
        UserSession.objects.filter(session_key=session.session_key, user_id=user.pk)
        .values_list("ip", "user_agent", "last_seen_at")
        .first()
    )
    if row is None:
        return False
    ip, user_agent, last_seen_at = row
    max_length = UserSession._meta.get_field("user_agent").max_length
    agent = request.META.get("HTTP_USER_AGENT", "")[0:max_length]
    try:
        client_ip = get_adapter().get_client_ip(request)
    except PermissionDenied:  # no client address: allauth refuses it, let it say so
        return False
    same_client: bool = ip == client_ip and user_agent == agent
    return same_client and last_seen_at > timezone.now() - timedelta(seconds=interval)


class UserSessionsMiddleware(AllauthUserSessions):  # type: ignore[misc]
    """allauth's session tracking, skipped for the polled status reads and for a session
    written moments ago from the same client."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _untracked(request) or _seen_recently(request):
            response: HttpResponse = self.get_response(request)
            return response
        tracked: HttpResponse = super().__call__(request)
        return tracked
