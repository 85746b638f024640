from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services, webhooks
from accounts.errors import ApiKeyInvalidError, WebhookEndpointInvalidError
from accounts.forms import ApiKeyForm, WebhookEndpointForm
from accounts.models import User
from accounts.selectors import api_key_get, api_key_list


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness + database reachability, for load balancers. No upstream calls."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def _owner(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # guaranteed by @login_required
    return user


def _api_page_context(
    request: HttpRequest,
    form: ApiKeyForm,
    *,
    new_secret: str = "",
    webhook_form: WebhookEndpointForm | None = None,
    new_webhook_secret: str = "",
) -> dict[str, Any]:
    owner = _owner(request)
    endpoint = webhooks.webhook_endpoint_get(user_id=owner.pk)
    if webhook_form is None:
        webhook_form = WebhookEndpointForm(initial={"url": endpoint.url if endpoint else ""})
    return {
        "webhook_endpoint": endpoint,
        "webhook_form": webhook_form,
        "webhook_deliveries": (
            list(webhooks.webhook_delivery_list(endpoint=endpoint)) if endpoint else []
        ),
        "new_webhook_secret": new_webhook_secret,
        "form": form,
        "api_keys": list(api_key_list(user_id=owner.pk)),
        "new_secret": new_secret,
        "now": timezone.now(),
        # The origin this page was served from, so the example works as pasted.
        "api_origin": request.build_absolute_uri("/").rstrip("/"),
        "api_docs_url": reverse("api-v1:openapi-view"),
    }


@never_cache  # the one response that carries a new key's secret must not be cached
@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """The API page: the user's keys, a form to create one, a copy-paste curl example.

    A new key's secret is in the response to the POST that created it and nowhere
    else (not in the session, a message or a redirect URL): reloading the page loses it.
    """
    if request.method != "POST":
        return render(request, "accounts/api_keys.html", _api_page_context(request, ApiKeyForm()))
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            created = services.api_key_create(
                user=_owner(request),
                name=form.cleaned_data["name"],
                expires_at=form.expires_at(),
                acting_user=_owner(request),
            )
        except ApiKeyInvalidError as exc:
            for field, message in exc.field_errors.items():
                form.add_error(field if field in form.fields else None, message)
        else:
            context = _api_page_context(request, ApiKeyForm(), new_secret=created.secret.reveal())
            context["new_key"] = created.api_key
            return render(request, "accounts/api_keys.html", context)
    return render(request, "accounts/api_keys.html", _api_page_context(request, form), status=400)


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, api_key_id: int) -> HttpResponse:
    api_key = api_key_get(user_id=_owner(request).pk, api_key_id=api_key_id)
    if api_key is None:
        raise Http404("No such API key.")
    services.api_key_revoke(api_key=api_key, acting_user=_owner(request))
    messages.success(request, f"Key “{api_key.name}” ({api_key.prefix}…) revoked.")
    return redirect("accounts:api_keys")


def _render_api_page(request: HttpRequest, status: int = 200, **context: Any) -> HttpResponse:
    return render(
        request,
        "accounts/api_keys.html",
        _api_page_context(request, ApiKeyForm(), **context),
        status=status,
    )


@never_cache  # the response that carries a new signing secret must not be cached
@login_required
@require_POST
def webhook_endpoint_set(request: HttpRequest) -> HttpResponse:
    """Set the webhook URL; a first one answers with its signing secret (shown once)."""
    form = WebhookEndpointForm(request.POST)
    form.is_valid()
    try:
        saved = webhooks.webhook_endpoint_set(
            user=_owner(request), url=form.cleaned_data.get("url", ""), acting_user=_owner(request)
        )
    except WebhookEndpointInvalidError as exc:
        for field, message in exc.field_errors.items():
            form.add_error(field if field in form.fields else None, message)
        return _render_api_page(request, status=400, webhook_form=form)
    if saved.secret is None:
        messages.success(request, "Webhook URL saved.")
        return redirect("accounts:api_keys")
    return _render_api_page(request, new_webhook_secret=saved.secret.reveal())


@never_cache
@login_required
@require_POST
def webhook_secret_rotate(request: HttpRequest) -> HttpResponse:
    endpoint = webhooks.webhook_endpoint_get(user_id=_owner(request).pk)
    if endpoint is None:
        raise Http404("No webhook endpoint.")
    saved = webhooks.webhook_secret_rotate(endpoint=endpoint, acting_user=_owner(request))
    assert saved.secret is not None
    return _render_api_page(request, new_webhook_secret=saved.secret.reveal())


@login_required
@require_POST
def webhook_endpoint_delete(request: HttpRequest) -> HttpResponse:
    endpoint = webhooks.webhook_endpoint_get(user_id=_owner(request).pk)
    if endpoint is None:
        raise Http404("No webhook endpoint.")
    webhooks.webhook_endpoint_delete(endpoint=endpoint, acting_user=_owner(request))
    messages.success(request, "Webhook endpoint removed: no more events are sent.")
    return redirect("accounts:api_keys")


@login_required
@require_POST
def webhook_test_send(request: HttpRequest) -> HttpResponse:
    endpoint = webhooks.webhook_endpoint_get(user_id=_owner(request).pk)
    if endpoint is None:
        raise Http404("No webhook endpoint.")
    delivery = webhooks.webhook_test_send(endpoint=endpoint, acting_user=_owner(request))
    messages.success(request, f"Test event {delivery.event_id} queued; see the delivery log.")
    return redirect("accounts:api_keys")
