"""In-memory state of the one sandbox app: users, balances, usage events, faults, logs.

Everything runs on one asyncio event loop, so a read-modify-write with no ``await`` in
between is atomic; handlers keep balance checks and debits in one synchronous block.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sandbox.billing import REASON_MESSAGES, BillingBook
from sandbox.config import RuntimeConfig, SandboxSettings
from sandbox.keys import SigningKeys
from sandbox.money import usd_micros_exact, usd_micros_for_fee
from sandbox.runners import RunnerConfig, default_runners
from sandbox.sso import SsoState

logger = logging.getLogger(__name__)

REQUEST_LOG_LIMIT = 50_000
STREAM_FILES_PER_REQUEST = 12  # go-tools in-memory driver keeps a ring of 12 per session
STREAM_REQUEST_LIMIT = 2_000


def iso_millis(moment: datetime) -> str:
    """``2026-11-26T19:22:47.123Z``: UTC, milliseconds, Z (JavaScript's toISOString)."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def utc_from_timestamp(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


@dataclasses.dataclass
class AppUser:
    id: str
    external_user_id: str
    email: str | None
    status: str
    created_at: datetime
    balance_usd_micros: int
    lifetime_granted_usd_micros: int

    def row(self, client_id: str) -> dict[str, Any]:
        """The pymthouse ``app_users`` row as /users returns it (clientId = the path id)."""
        return {
            "id": self.id,
            "clientId": client_id,
            "externalUserId": self.external_user_id,
            "email": self.email,
            "depositWalletAddress": None,
            "status": self.status,
            "role": "user",
            "autoTopUpEnabled": False,
            "autoTopUpUsdMicros": None,
            "createdAt": iso_millis(self.created_at),
        }


@dataclasses.dataclass(frozen=True)
class UsageEvent:
    event_id: str
    timestamp: float
    external_user_id: str
    gateway_request_id: str | None
    pipeline: str
    model_id: str
    manifest_id: str
    fee_wei: int
    usd_micros: int
    usd_micros_exact: Fraction
    pixels: int
    source: str

    @property
    def time(self) -> datetime:
        return utc_from_timestamp(self.timestamp)

    def as_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "time": iso_millis(self.time),
            "externalUserId": self.external_user_id,
            "gatewayRequestId": self.gateway_request_id,
            "pipeline": self.pipeline,
            "modelId": self.model_id,
            "manifestId": self.manifest_id,
            "feeWei": str(self.fee_wei),
            "usdMicros": str(self.usd_micros),
            "pixels": self.pixels,
            "source": self.source,
        }


@dataclasses.dataclass
class Fault:
    id: str
    method: str
    path: str
    status: int | None
    body: Any
    headers: dict[str, str]
    delay: float
    drop: bool
    times: int | None
    #: ``"stall"`` / ``"drop"``: the handler runs first (a signer payment issues its
    #: ticket), then its answer is held ``delay`` seconds, or the connection is dropped.
    answer_lost: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
            "delay": self.delay,
            "drop": self.drop,
            "times": self.times,
            "answerLost": self.answer_lost,
        }


@dataclasses.dataclass
class QueueJob:
    request_id: str
    runner: str
    ready_at: float
    body: dict[str, Any]
    fault: dict[str, Any] | None = None


class InsufficientBalanceError(Exception):
    """The user's spendable balance is <= 0. ``reason`` is the webhook's 483 text."""

    def __init__(self, external_user_id: str, reason: str = "insufficient balance") -> None:
        super().__init__(external_user_id)
        self.reason = reason


class SandboxState:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.keys = SigningKeys(settings.issuer)
        self.sso = SsoState(settings.issuer)
        self.hmac_secret = secrets.token_bytes(32)
        # Stands in for the app owner's id in billing_subject_key / cost_owner_user_id.
        self.owner_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-owner:{settings.app_id}"))
        self.signer_address = "0x" + secrets.token_hex(20)
        self.config: RuntimeConfig = settings.runtime_defaults.copy()
        self.users: dict[str, AppUser] = {}
        self.events: list[UsageEvent] = []
        self.faults: list[Fault] = []
        self.request_log: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=REQUEST_LOG_LIMIT
        )
        # Orchestrator side (go-livepeer pm/recipient.go, core/accounting.go): ticket
        # nonces already seen per recipientRandHash, credit and fixed price per
        # (sender, manifest), the runners and their in-flight sessions.
        self.used_tickets: set[str] = set()
        self.orch_balances: dict[tuple[str, str], int] = {}
        self.fixed_prices: dict[tuple[str, str], tuple[int, int]] = {}
        self.runners: dict[str, RunnerConfig] = default_runners(settings)
        self.billing = BillingBook(settings.app_id, self.owner_id, settings.billing_defaults)
        self.orchestrator_address = "0x" + secrets.token_hex(20)
        self.queue_jobs: dict[str, QueueJob] = {}
        self.streams: collections.OrderedDict[str, collections.OrderedDict[str, bytes]] = (
            collections.OrderedDict()
        )

    def reset(self) -> None:
        """Forget users, events, faults, logs and jobs; restore the start-up runtime config."""
        self.config = self.settings.runtime_defaults.copy()
        self.users.clear()
        self.events.clear()
        self.faults.clear()
        self.request_log.clear()
        self.used_tickets.clear()
        self.orch_balances.clear()
        self.fixed_prices.clear()
        self.runners = default_runners(self.settings)
        self.billing = BillingBook(
            self.settings.app_id, self.owner_id, self.settings.billing_defaults
        )
        self.queue_jobs.clear()
        self.streams.clear()
        self.sso.reset()

    # --- users -------------------------------------------------------------------------

    def find_user(self, external_user_id: str) -> AppUser | None:
        return self.users.get(external_user_id)

    def create_user(
        self, external_user_id: str, *, email: str | None = None, status: str = "active"
    ) -> AppUser:
        grant = self.config.default_balance_usd_micros
        user = AppUser(
            id=str(uuid.uuid4()),
            external_user_id=external_user_id,
            email=email,
            status=status,
            created_at=datetime.now(UTC),
            balance_usd_micros=grant,
            lifetime_granted_usd_micros=grant,
        )
        self.users[external_user_id] = user
        logger.info("provisioned sandbox user %s", external_user_id)
        return user

    def resolve_or_create_user(self, external_user_id: str) -> AppUser:
        """Auto-provision like pymthouse's signer mint (status is neither checked nor changed)."""
        return self.find_user(external_user_id) or self.create_user(external_user_id)

    def set_balance(self, external_user_id: str, usd_micros: int) -> AppUser:
        """Set the spendable balance; lifetime grant moves with it so consumed stays exact."""
        user = self.resolve_or_create_user(external_user_id)
        user.lifetime_granted_usd_micros += usd_micros - user.balance_usd_micros
        user.balance_usd_micros = usd_micros
        return user

    def consumed_usd_micros(self, user: AppUser) -> int:
        return user.lifetime_granted_usd_micros - user.balance_usd_micros

    # --- metering ----------------------------------------------------------------------

    def check_balance(self, external_user_id: str) -> None:
        """pymthouse's signer webhook gate: InsufficientBalanceError when spendable <= 0.

        OpenMeter-absent mode is permissive, like pymthouse. In merchant mode the payer is
        the end user's own customer: its spendable (prepaid + included left this month),
        then overage eligibility and the debt ceiling (``BillingBook.refusal``).
        """
        user = self.resolve_or_create_user(external_user_id)
        if self.billing.is_merchant:
            if not self.billing_on:
                return
            customer = self.billing.customer(self.billing.customer_key(external_user_id))
            reason = self.billing.refusal(customer, datetime.now(UTC))
            if reason is not None:
                raise InsufficientBalanceError(external_user_id, REASON_MESSAGES[reason])
            return
        if self.config.open_meter_enabled and user.balance_usd_micros <= 0:
            raise InsufficientBalanceError(external_user_id)

    def charge(
        self,
        *,
        external_user_id: str,
        fee_wei: int,
        pixels: int,
        model_id: str,
        pipeline: str,
        manifest_id: str,
        gateway_request_id: str | None,
        source: str,
    ) -> UsageEvent:
        """Record one usage event (one signed-ticket batch) and debit it (no awaits)."""
        user = self.resolve_or_create_user(external_user_id)
        eth_usd: Decimal = self.config.eth_usd
        event = UsageEvent(
            event_id=str(uuid.uuid4()),
            timestamp=time.time(),
            external_user_id=external_user_id,
            gateway_request_id=gateway_request_id,
            pipeline=pipeline,
            model_id=model_id,
            manifest_id=manifest_id,
            fee_wei=fee_wei,
            usd_micros=usd_micros_for_fee(fee_wei, eth_usd),
            usd_micros_exact=usd_micros_exact(fee_wei, eth_usd),
            pixels=pixels,
            source=source,
        )
        self.events.append(event)
        if self.billing.is_merchant:
            customer = self.billing.customer(self.billing.customer_key(external_user_id))
            self.billing.consume(customer, event.usd_micros, event.time)
        else:
            user.balance_usd_micros -= event.usd_micros
        return event

    @property
    def billing_on(self) -> bool:
        """Hosted billing configured (OpenMeter and Stripe): the billing book's switch and
        the runtime ``openMeterEnabled`` both on."""
        return self.billing.is_on(self.config.open_meter_enabled)

    def visible_events(self) -> list[UsageEvent]:
        """Events older than the usage lag (what the metering pipeline has "ingested")."""
        cutoff = time.time() - self.config.usage_lag_seconds
        return [event for event in self.events if event.timestamp <= cutoff]

    # --- faults ------------------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first active fault matching the request, consuming one of its ``times``."""
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    # --- gateway image store -----------------------------------------------------------

    def store_image(self, request_id: str, file_name: str, data: bytes) -> None:
        files = self.streams.setdefault(request_id, collections.OrderedDict())
        files[file_name] = data
        while len(files) > STREAM_FILES_PER_REQUEST:
            files.popitem(last=False)
        while len(self.streams) > STREAM_REQUEST_LIMIT:
            self.streams.popitem(last=False)

    def load_image(self, request_id: str, file_name: str) -> bytes | None:
        files = self.streams.get(request_id)
        return None if files is None else files.get(file_name)
