"""The floor: the upstream calls one image needs, made directly with plain ``requests``.

No Django, no broker, no database, no polling: per image it makes exactly the calls the
platform's worker makes (``inference.services`` → ``integrations.livepeer.live_runner``),
with the same protocol (go-livepeer ``176aa415``; docs/upstream.md §L5-L9):

1. mint a signer session at pymthouse: ``POST {token_endpoint}`` (Basic m2m,
   ``grant_type=client_credentials&scope=sign:mint_user_token&external_user_id=…``);
2. ``GET {discovery_url}`` and pick a single-shot runner of ``image-generation/{model}``
   priced in a unit the client pays (``fixed`` or ``seconds``); its app URL is the
   published ``…/apps/{id}/app`` **plus the trailing slash** (the bare URL is a 301);
3. ``POST {signer_url}/sign-orchestrator-info`` for the payer address, cached per signer
   like the platform does (``integrations.livepeer.signer``: per process, 300 s);
4. the unpaid call ``POST {app}/`` with ``Livepeer-Payer-Address`` → 402
   ``{payment_params, manifest_id, payment_url}``;
5. ``POST {signer_url}/generate-live-payment`` with ``type`` from the runner's unit
   (``fixed`` → ``fixed``, ``seconds`` → ``live``), the challenge's ``ManifestID`` and
   ``maxPrice`` in the runner's unit (price × the default markup, rounded up), the body
   ``live_runner.payment.payment_body`` sends (no ``gatewayRequestId``);
6. the paid call ``POST {app}/`` with ``Livepeer-Payment`` and ``Livepeer-Segment``
   (the orchestrator consumes the payment, then runs the app) →
   ``{"images": [{"url": "data:image/png;base64,…"}]}``;
7. decode the data URL and check the PNG magic and its IHDR dimensions (the client
   checks format and size of the image it keeps).

The OIDC discovery document is fetched once, as the platform caches it (300 s). Each
thread keeps one keep-alive session: this is the best a client can do, which is the point
of a floor.
"""

from __future__ import annotations

import base64
import logging
import struct
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import requests  # noqa: TID251 -- the floor is deliberately plain requests, no Django

from bench.batch import GenerationFailedError
from bench.stats import Sample

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Same as settings.LIVEPEER_MAX_PRICE_MARKUP's default.
MAX_PRICE_MARKUP = Decimal("1.012")
#: Runner price unit → signer payment ``type`` (integrations.livepeer.live_runner.pricing).
PAYMENT_TYPES = {"fixed": "fixed", "seconds": "live"}
TIMEOUT = (3.05, 120.0)


@dataclass(frozen=True)
class FloorOptions:
    pymthouse_url: str
    m2m_client_id: str
    m2m_client_secret: str
    external_user_id: str
    model_id: str
    width: int
    height: int


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _expect(response: requests.Response, status: int, step: str) -> Any:
    if response.status_code != status:
        raise GenerationFailedError(
            f"floor {step}: HTTP {response.status_code} (expected {status}): {response.text[:300]}"
        )
    return response.json()


class FloorClient:
    def __init__(self, options: FloorOptions) -> None:
        self.options = options
        self._local = threading.local()
        self._payer_addresses: dict[str, str] = {}
        self._payer_lock = threading.Lock()
        issuer = f"{options.pymthouse_url}/api/v1/oidc"
        with _session() as session:
            metadata = _expect(
                session.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT),
                200,
                "oidc discovery",
            )
        self.token_endpoint: str = metadata["token_endpoint"]

    def _thread_session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _session()
        return session

    def _payer_address(self, http: requests.Session, signer_url: str, bearer: str) -> str:
        with self._payer_lock:
            cached = self._payer_addresses.get(signer_url)
        if cached is not None:
            return cached
        info = _expect(
            http.post(
                f"{signer_url}/sign-orchestrator-info",
                json={},
                headers={"Authorization": bearer},
                timeout=TIMEOUT,
            ),
            200,
            "sign-orchestrator-info",
        )
        with self._payer_lock:
            self._payer_addresses[signer_url] = info["address"]
        return str(info["address"])

    def generate(self, index: int) -> Sample:
        options = self.options
        http = self._thread_session()
        stages: dict[str, float] = {}
        started = mark = time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            stages[name] = now - mark
            mark = now

        signer_session = _expect(
            http.post(
                self.token_endpoint,
                data={
                    "grant_type": "client_credentials",
                    "scope": "sign:mint_user_token",
                    "external_user_id": options.external_user_id,
                },
                auth=(options.m2m_client_id, options.m2m_client_secret),
                timeout=TIMEOUT,
            ),
            200,
            "mint signer session",
        )
        bearer = f"Bearer {signer_session['access_token']}"
        signer_url = str(signer_session["signer_url"]).rstrip("/")
        lap("mint")

        orchestrators = _expect(
            http.get(
                signer_session["discovery_url"], headers={"Authorization": bearer}, timeout=TIMEOUT
            ),
            200,
            "discover",
        )
        app = f"image-generation/{options.model_id}"
        runner = next(
            runner
            for orchestrator in orchestrators
            for runner in orchestrator["runners"]
            if runner["app"] == app
            and runner.get("mode", "single-shot") == "single-shot"
            and runner["price_info"]["unit"] in PAYMENT_TYPES
        )
        app_url = str(runner["url"]).rstrip("/") + "/"
        lap("discover")

        payer_address = self._payer_address(http, signer_url, bearer)
        lap("signer_info")

        payload = {
            "prompt": f"pixelhouse bench image {index}",
            "size": f"{options.width}x{options.height}",
            "model_id": options.model_id,
            "seed": index,
        }
        challenge = _expect(
            http.post(
                app_url,
                json=payload,
                headers={"Livepeer-Payer-Address": payer_address},
                allow_redirects=False,
                timeout=TIMEOUT,
            ),
            402,
            "runner challenge",
        )
        lap("challenge")

        price = runner["price_info"]
        unit = str(price["unit"])
        ceiling = (Decimal(int(price["price"])) * MAX_PRICE_MARKUP).to_integral_value(
            rounding=ROUND_CEILING
        )
        ticket = _expect(
            http.post(
                f"{signer_url}/generate-live-payment",
                json={
                    "orchestrator": challenge["payment_params"],
                    "type": PAYMENT_TYPES[unit],
                    "ManifestID": challenge["manifest_id"],
                    "app": app,
                    "maxPrice": {"price": str(int(ceiling)), "currency": "wei", "unit": unit},
                    "pipeline": "text-to-image",
                    "modelId": options.model_id,
                    "attributionSource": "direct_api",
                    "paymentMetadataVersion": "2026-04-usage-attribution-v1",
                },
                headers={"Authorization": bearer},
                timeout=TIMEOUT,
            ),
            200,
            "generate-live-payment",
        )
        lap("payment")

        paid_headers = {
            "Livepeer-Payer-Address": payer_address,
            "Livepeer-Payment": ticket["payment"],
            "Livepeer-Segment": ticket["segCreds"],
        }
        result = _expect(
            http.post(
                app_url,
                json=payload,
                headers=paid_headers,
                allow_redirects=False,
                timeout=TIMEOUT,
            ),
            200,
            "paid runner call",
        )
        lap("paid_call")

        data_url: str = result["images"][0]["url"]
        header, _, encoded = data_url.partition(",")
        if not header.endswith(";base64"):
            raise GenerationFailedError(f"floor image #{index}: not a base64 data URL")
        image = base64.b64decode(encoded, validate=True)
        if not image.startswith(PNG_MAGIC) or image[12:16] != b"IHDR":
            raise GenerationFailedError(f"floor image #{index}: not a PNG")
        if struct.unpack(">II", image[16:24]) != (options.width, options.height):
            raise GenerationFailedError(
                f"floor image #{index}: not {options.width}x{options.height}"
            )
        lap("decode")
        return Sample(end_to_end=time.monotonic() - started, stages=stages)
