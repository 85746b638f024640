"""App-client routes: ``users/{ext}/invoices`` (+ ``hosted-url``) and
``users/{ext}/payment-methods``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.pymthouse.billing.common import (
    OPENMETER_NOT_CONFIGURED,
    app_client,
    error_response,
    not_found,
    tolerant_json,
)
from sandbox.pymthouse.billing.wallet import cards_json, setup_session
from sandbox.web import get_state, json_response

# --- invoices and payment methods ---------------------------------------------------------


def _page_param(value: str | None, default: int, maximum: int) -> int:
    if value is None or not value.isdigit():
        return default
    return max(1, min(int(value), maximum))


async def user_invoices(request: Request) -> Response:
    """``GET …/users/{ext}/invoices`` (T#51, T#116): fails open to an empty page."""
    state = get_state(request)
    if not app_client(state, request):
        return not_found()
    page = _page_param(request.query_params.get("page"), 1, 10_000)
    size = _page_param(request.query_params.get("pageSize"), 20, 100)
    items: list[dict[str, Any]] = []
    book = state.billing
    if state.billing_on and book.is_merchant:
        customer = book.customer(book.customer_key(request.path_params["ext"]))
        items = [invoice.as_json() for invoice in reversed(customer.invoices)]
    return json_response(
        {
            "items": items[(page - 1) * size : page * size],
            "page": page,
            "pageSize": size,
            "totalCount": len(items),
        }
    )


async def invoice_hosted_url(request: Request) -> Response:
    """``GET …/invoices/{id}/hosted-url`` (T#52 503, T#117 404)."""
    state = get_state(request)
    if not app_client(state, request):
        return not_found()
    book = state.billing
    if not book.is_merchant and not state.billing_on:
        return error_response(503, "Billing unavailable")
    customer = book.customer(book.customer_key(request.path_params["ext"]))
    invoice_id = request.path_params["invoice"]
    found = next((item for item in customer.invoices if item.id == invoice_id), None)
    if found is None or not state.billing_on:
        return not_found()
    base = f"{state.settings.public_url}/checkout/invoices/{found.id}"
    return json_response({"hostedInvoiceUrl": base, "invoicePdf": f"{base}.pdf"})


async def user_payment_methods(request: Request) -> Response:
    """``GET``/``POST …/users/{ext}/payment-methods`` (T#53, T#54, T#118, T#119)."""
    state = get_state(request)
    if not app_client(state, request):
        return not_found()
    book = state.billing
    ext = request.path_params["ext"]
    customer = book.customer(book.customer_key(ext))
    if request.method == "GET":
        visible = state.billing_on and (book.connect_ready or not book.is_merchant)
        return json_response({"paymentMethods": cards_json(customer) if visible else []})
    body = await tolerant_json(request)
    if not state.billing_on:
        return error_response(400, OPENMETER_NOT_CONFIGURED)
    if book.is_merchant and not book.connect_ready:
        return error_response(403, "Merchant Stripe Connect onboarding is required before checkout")
    return setup_session(state, ext if book.is_merchant else None, body)
