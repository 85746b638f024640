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

from allauth.usersessions.middleware import UserSessionsMiddleware as AllauthUserSessions
from django.http import HttpRequest, HttpResponse

#: GET/HEAD paths that are polled: ``/api/v1/generations/{id}``, ``…/next``, ``…/events``.
UNTRACKED_READS = re.compile(r"^/api/v1/generations/[0-9a-fA-F-]{32,36}(?:/next|/events)?$")


def _untracked(request: HttpRequest) -> bool:
    return request.method in ("GET", "HEAD") and bool(UNTRACKED_READS.match(request.path_info))


class UserSessionsMiddleware(AllauthUserSessions):  # type: ignore[misc]
    """allauth's session tracking, skipped for the polled status reads."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _untracked(request):
            response: HttpResponse = self.get_response(request)
            return response
        tracked: HttpResponse = super().__call__(request)
        return tracked
