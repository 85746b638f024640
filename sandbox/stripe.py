"""``python -m sandbox.stripe [--port 8420] [--webhook-url URL --webhook-secret SECRET]``.

Runs localstripe (PyPI ``localstripe``, a stateful fake of Stripe's HTTP API with its own
fake Stripe.js at ``/js.stripe.com/v3/``) the way the tests and ``make run`` need it:

* bound to **127.0.0.1 only** (localstripe's own ``start()`` binds ``::``, every
  interface: ``localstripe/server.py`` ``start``);
* **from scratch**, and never written to disk: localstripe pickles its whole store to
  ``/tmp/localstripe.pickle`` on every write (``localstripe/resources.py`` ``Store``),
  a file shared by every process on the machine; here the store lives in memory only;
* as strict as Stripe on the **minimum charge** ($0.50 in USD: 400 ``amount_too_small``),
  which localstripe does not check;
* with a **signed webhook endpoint** registered through localstripe's own control route
  ``POST /_config/webhooks/{id}`` (form fields ``url``, ``secret`` and ``events[]``), so
  each event is POSTed to ``--webhook-url`` with a ``Stripe-Signature`` header made
  with ``--webhook-secret`` (``localstripe/webhooks.py`` ``_send_webhook``).

Environment fallbacks: ``STRIPE_SANDBOX_PORT``, ``STRIPE_WEBHOOK_URL``,
``STRIPE_WEBHOOK_SECRET``. Imports nothing of the product.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import ClientSession, web

logger = logging.getLogger("sandbox.stripe")

#: What the product handles (billing/services/payments.py); localstripe sends only the
#: payment intent ones by itself, refunds and disputes are posted signed by the tests.
WEBHOOK_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
)
WEBHOOK_ID = "pixelhouse"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.stripe", description="localstripe on 127.0.0.1, in memory."
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("STRIPE_SANDBOX_PORT", "8420"))
    )
    parser.add_argument("--webhook-url", default=os.environ.get("STRIPE_WEBHOOK_URL", ""))
    parser.add_argument("--webhook-secret", default=os.environ.get("STRIPE_WEBHOOK_SECRET", ""))
    return parser.parse_args(argv)


def _memory_only() -> None:
    from localstripe import resources

    def dump_to_disk(self: object) -> None:  # the store stays in this process
        return None

    resources.Store.dump_to_disk = dump_to_disk
    resources.store.clear()


#: Stripe's minimum charge per currency, in the smallest unit (Stripe docs, "Minimum and
#: maximum charge amounts", https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts);
#: localstripe 1.15.10 accepts any positive amount (``PaymentIntent.__init__``).
MINIMUM_CHARGE = {"usd": 50}


def _minimum_charge() -> None:
    """Refuse a PaymentIntent below Stripe's minimum as Stripe does: 400
    ``amount_too_small``."""
    from localstripe import resources
    from localstripe.errors import UserError

    original = resources.PaymentIntent.__init__
    if getattr(original, "_pixelhouse_minimum", False):
        return

    def __init__(
        self: object, amount: object = None, currency: object = None, **kwargs: object
    ) -> None:
        minimum = MINIMUM_CHARGE.get(str(currency).lower())
        try:
            cents = int(str(amount))
        except ValueError:
            cents = None
        if minimum is not None and cents is not None and 0 < cents < minimum:
            raise UserError(
                400,
                f"Amount must be at least ${minimum / 100:.2f} {str(currency).lower()}",
                {"code": "amount_too_small", "param": "amount"},
            )
        original(self, amount=amount, currency=currency, **kwargs)

    __init__._pixelhouse_minimum = True  # type: ignore[attr-defined]
    resources.PaymentIntent.__init__ = __init__


async def webhook_register(
    base_url: str, *, url: str, secret: str, events: tuple[str, ...] = WEBHOOK_EVENTS
) -> None:
    """Register (or replace) the signed endpoint ``WEBHOOK_ID`` at a running localstripe."""
    form = [("url", url), ("secret", secret)] + [("events[]", event) for event in events]
    async with (
        ClientSession() as session,
        session.post(f"{base_url}/_config/webhooks/{WEBHOOK_ID}", data=form) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"localstripe refused the webhook: {response.status}")


async def serve(port: int, *, webhook_url: str, webhook_secret: str) -> None:
    _memory_only()
    _minimum_charge()
    from localstripe.server import app

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="127.0.0.1", port=port)
    await site.start()
    base_url = f"http://127.0.0.1:{port}"
    if webhook_url:
        if not webhook_secret:
            raise SystemExit("sandbox.stripe: --webhook-url needs --webhook-secret")
        await webhook_register(base_url, url=webhook_url, secret=webhook_secret)
    logger.info("localstripe on %s (webhook: %s)", base_url, webhook_url or "none")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(
            serve(args.port, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret)
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
