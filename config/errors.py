"""The project's 500 handler: a database that cannot be reached is a 503, not a 500.

Django calls ``handler500`` while it handles an uncaught exception (from a view or from a
middleware, such as the session or the user lookup), so the exception is the one being
handled (``sys.exc_info``). An ``OperationalError`` or ``InterfaceError`` means the
database is down, restarting or out of connections: the request may simply be repeated,
so the answer says so (503 with ``Retry-After``), as JSON under ``/api/`` and as a page
elsewhere. Anything else is the styled 500 page (JSON under ``/api/``). Neither needs the
database: the templates render with an empty context.
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def _database_unavailable() -> bool:
    exc = sys.exc_info()[1]
    while exc is not None:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def server_error(request: HttpRequest) -> HttpResponse:
    api = request.path_info.startswith("/api/")
    if _database_unavailable():
        logger.warning("database unavailable: %s %s answered 503", request.method, request.path)
        response: HttpResponse
        if api:
            response = JsonResponse(
                {
                    "code": "service_unavailable",
                    "detail": "The service is briefly unavailable; please retry shortly.",
                },
                status=503,
            )
        else:
            response = HttpResponse(loader.render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if api:
        return JsonResponse(
            {"code": "internal_error", "detail": "An error on our side stopped this request."},
            status=500,
        )
    return HttpResponse(loader.render_to_string("500.html"), status=500)
