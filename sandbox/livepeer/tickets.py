"""Opaque, HMAC-sealed blobs standing in for go-livepeer's protobufs.

``payment_params`` (runner 402 challenge), ``payment`` (from the signer), ``segCreds``
and the signer ``state`` are standard base64 of canonical JSON carrying a ``kind`` and
an HMAC-SHA256 ``mac`` under a per-process secret, so the runner can verify what the
signer issued (and the signer what the runner issued) without shared storage.
Clients must treat them as opaque strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


class SealError(ValueError):
    """A blob is malformed, forged or of the wrong kind."""


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def seal(secret: bytes, kind: str, payload: dict[str, Any]) -> str:
    body = {"kind": kind, **payload}
    mac = hmac.new(secret, _canonical(body), hashlib.sha256).hexdigest()
    return base64.b64encode(_canonical({**body, "mac": mac})).decode("ascii")


def unseal(secret: bytes, kind: str, blob: object) -> dict[str, Any]:
    if not isinstance(blob, str) or not blob:
        raise SealError(f"{kind} is missing")
    try:
        decoded = json.loads(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SealError(f"{kind} is not a valid blob") from exc
    if not isinstance(decoded, dict):
        raise SealError(f"{kind} is not a valid blob")
    mac = decoded.pop("mac", None)
    expected = hmac.new(secret, _canonical(decoded), hashlib.sha256).hexdigest()
    if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
        raise SealError(f"{kind} signature is invalid")
    if decoded.get("kind") != kind:
        raise SealError(f"blob is not a {kind}")
    return decoded


def sign_state(secret: bytes, state: dict[str, Any]) -> dict[str, str]:
    """go-livepeer's ``{"State": b64(JSON), "Sig": b64(sig)}`` pair."""
    raw = _canonical(state)
    return {
        "State": base64.b64encode(raw).decode("ascii"),
        "Sig": base64.b64encode(hmac.new(secret, raw, hashlib.sha256).digest()).decode("ascii"),
    }


def verify_state(secret: bytes, signed: object) -> dict[str, Any]:
    if not isinstance(signed, dict):
        raise SealError("state must be an object with State and Sig")
    try:
        raw = base64.b64decode(str(signed.get("State", "")), validate=True)
        sig = base64.b64decode(str(signed.get("Sig", "")), validate=True)
    except binascii.Error as exc:
        raise SealError("state is not valid base64") from exc
    if not hmac.compare_digest(sig, hmac.new(secret, raw, hashlib.sha256).digest()):
        raise SealError("invalid state signature")
    state: Any = json.loads(raw)
    if not isinstance(state, dict):
        raise SealError("invalid state")
    return state
