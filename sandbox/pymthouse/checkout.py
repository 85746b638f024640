"""A stand-in for Stripe Checkout: the page ``checkoutUrl`` points at, and its webhook.

``GET /checkout/c/pay/{cs}`` shows the amount (payment mode: a top-up) or "save a card"
(setup mode), a Pay/Save button and a Cancel link. Pressing it completes the session and
redirects to ``successUrl``; after ``creditDelaySeconds`` (Stripe's webhook delivery, ~1 s)
what pymthouse's ``checkout.session.completed`` handler does happens
(pymthouse/pymthouse@5ee7cfc7 ``src/app/webhooks/stripe/handle-post.ts``,
``src/lib/stripe/topup-checkout.ts``):

* payment mode: grant ``amount_total × 10 000`` micros to the payer, key
  ``topup:{cs_id}``, so a session credits **exactly once** however often it is paid,
  reloaded or re-delivered;
* setup mode: the new card becomes the customer's default
  (``restoreAppUserBillingProfileAfterPaymentMethodAttached``); **no** subscription is
  created or changed.

Cancel is a plain link to ``cancelUrl``: the session stays open, nothing is recorded.
"""

from __future__ import annotations

import asyncio
import html
import logging

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.billing import BillingBook, CheckoutSession, usd_text
from sandbox.web import get_state

logger = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout (sandbox Stripe)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
.amount{{font-size:2rem;font-weight:600}}button{{font-size:1rem;padding:.6rem 1.4rem}}</style>
</head><body>
<p>Sandbox Stripe Checkout</p>
<h1>{title}</h1>
<p class="amount" data-testid="amount">{amount}</p>
<p>Test card <code>4242 4242 4242 4242</code></p>
<form method="post" action="{action}"><button type="submit" id="pay">{button}</button></form>
<p><a id="cancel" href="{cancel}">Cancel</a></p>
</body></html>
"""


def _session(request: Request) -> tuple[BillingBook, CheckoutSession | None]:
    book = get_state(request).billing
    return book, book.sessions.get(request.path_params["session"])


def _missing() -> Response:
    return HTMLResponse("<!doctype html><p>This checkout session does not exist.</p>", 404)


async def checkout_page(request: Request) -> Response:
    _book, session = _session(request)
    if session is None:
        return _missing()
    if session.status == "complete":
        return RedirectResponse(session.success_url, status_code=303)
    if session.mode == "payment" and session.amount_usd_micros is not None:
        title, amount = "Add credit", f"${usd_text(session.amount_usd_micros)}"
        button = f"Pay ${usd_text(session.amount_usd_micros)}"
    else:
        title, amount, button = "Save a card", "$0.00 today", "Save card"
    page = _PAGE.format(
        title=html.escape(title),
        amount=html.escape(amount),
        action=html.escape(f"/checkout/c/pay/{session.id}"),
        button=html.escape(button),
        cancel=html.escape(session.cancel_url),
    )
    return HTMLResponse(page)


def complete(book: BillingBook, session: CheckoutSession) -> None:
    """What the ``checkout.session.completed`` webhook does (idempotent by its keys)."""
    customer = book.customer(session.customer_key)
    if session.mode == "payment" and session.amount_usd_micros is not None:
        cents = session.amount_usd_micros // 10_000  # amount_total in cents
        if book.grant(customer, cents * 10_000, key=f"topup:{session.id}"):
            book.new_invoice(
                customer, total_usd_micros=session.amount_usd_micros, invoice_type="payment"
            )
            logger.info("credited %s micros for %s", cents * 10_000, session.id)
        session.credited = True
    elif session.mode == "setup" and not session.credited:
        book.save_card(customer)
        session.credited = True


async def checkout_pay(request: Request) -> Response:
    """Pay / save: the session completes once; the webhook effect follows after a delay."""
    book, session = _session(request)
    if session is None:
        return _missing()
    if session.status == "open":
        session.status = "complete"
        delay = book.credit_delay_seconds
        if delay <= 0:
            complete(book, session)
        else:
            asyncio.get_running_loop().call_later(delay, complete, book, session)
        logger.info("checkout %s completed (%s), effect in %.1f s", session.id, session.mode, delay)
    return RedirectResponse(session.success_url, status_code=303)


routes = [
    Route("/checkout/c/pay/{session}", checkout_page, methods=["GET"]),
    Route("/checkout/c/pay/{session}", checkout_pay, methods=["POST"]),
]
