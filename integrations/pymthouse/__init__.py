"""The pymthouse client: the project's only HTTP caller of pymthouse.

Use ``get_client()`` (built from ``PYMTHOUSE_*`` settings) and catch the narrowest
``PymthouseError`` subclass. Contract: docs/upstream.md (pymthouse).
"""

from __future__ import annotations

from integrations.pymthouse import billing_types
from integrations.pymthouse.client import PymthouseClient, get_client
from integrations.pymthouse.config import PymthouseConfig
from integrations.pymthouse.errors import (
    PymthouseAuthError,
    PymthouseBadRequestError,
    PymthouseBillingConflictError,
    PymthouseBillingUnavailableError,
    PymthouseConfigurationError,
    PymthouseConnectNotReadyError,
    PymthouseError,
    PymthouseInsufficientFundsError,
    PymthouseNotFoundError,
    PymthouseOwnerWalletError,
    PymthousePaymentMethodRequiredError,
    PymthouseProtocolError,
    PymthouseRateLimitedError,
    PymthouseTimeoutError,
    PymthouseUnavailableError,
)
from integrations.pymthouse.identifiers import validate_external_user_id
from integrations.pymthouse.money import (
    MoneyParseError,
    parse_signed_usd_micros,
    parse_usd_micros,
    parse_wei,
)
from integrations.pymthouse.session import MAX_CONCURRENT_REQUESTS
from integrations.pymthouse.types import (
    GroupBy,
    ManifestRow,
    ProviderMetadata,
    PymthouseUser,
    SecretToken,
    SignerSession,
    UsageBalance,
    UsageByManifest,
    UsageByPipelineModel,
    UsageByUser,
    UsageByUserTotals,
    UsageReport,
    UsageTotals,
    UserStatus,
    UserToken,
    UserUpsert,
)

__all__ = [
    "MAX_CONCURRENT_REQUESTS",
    "GroupBy",
    "MoneyParseError",
    "ProviderMetadata",
    "PymthouseAuthError",
    "PymthouseBadRequestError",
    "PymthouseBillingConflictError",
    "PymthouseBillingUnavailableError",
    "PymthouseClient",
    "PymthouseConfig",
    "PymthouseConfigurationError",
    "PymthouseConnectNotReadyError",
    "PymthouseError",
    "PymthouseInsufficientFundsError",
    "PymthouseNotFoundError",
    "PymthouseOwnerWalletError",
    "PymthousePaymentMethodRequiredError",
    "PymthouseProtocolError",
    "PymthouseRateLimitedError",
    "PymthouseTimeoutError",
    "PymthouseUnavailableError",
    "PymthouseUser",
    "SecretToken",
    "SignerSession",
    "ManifestRow",
    "UsageBalance",
    "UsageByManifest",
    "UsageByPipelineModel",
    "UsageByUser",
    "UsageByUserTotals",
    "UsageReport",
    "UsageTotals",
    "UserStatus",
    "UserToken",
    "UserUpsert",
    "billing_types",
    "get_client",
    "parse_signed_usd_micros",
    "parse_usd_micros",
    "parse_wei",
    "validate_external_user_id",
]
