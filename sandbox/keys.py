"""The sandbox's signing key: one RSA-2048 key per process, RS256 JWTs, the JWKS document."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode

logger = logging.getLogger(__name__)

ACCESS_TOKEN_JWT_TYP = "at+jwt"

M2M_TOKEN_TTL_SECONDS = 3600
USER_TOKEN_TTL_SECONDS = 900
SIGNER_TOKEN_TTL_SECONDS = 300
MAX_PUBLISHED_KEYS = 5


class TokenError(Exception):
    """A bearer token failed verification (bad signature, issuer, audience or expiry)."""


class SigningKeys:
    """Holds the process's RSA key. Nothing here logs or stores the tokens it mints."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.kid = str(uuid.uuid4())
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._private_key.public_key()
        # Keys retired by rotate(), newest first; pymthouse publishes its newest 5 keys.
        self._retired: list[tuple[str, rsa.RSAPublicKey]] = []

    def rotate(self, *, keep_old: bool = True) -> str:
        """Sign with a fresh key from now on; the old one stays in the JWKS unless dropped."""
        if keep_old:
            self._retired.insert(0, (self.kid, self._public_key))
            del self._retired[MAX_PUBLISHED_KEYS - 1 :]
        else:
            self._retired.clear()
        self.kid = str(uuid.uuid4())
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._private_key.public_key()
        logger.info("signing key rotated (keep_old=%s)", keep_old)
        return self.kid

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    def public_key_pem(self) -> bytes:
        """The active public key as PEM (what an HS256 key-confusion attacker would use)."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document, with the field order node-oidc-provider uses (active key first)."""
        keys = []
        for kid, public_key in [(self.kid, self._public_key), *self._retired]:
            raw: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
            keys.append(
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": kid,
                    "alg": "RS256",
                    "e": str(raw["e"]),
                    "n": str(raw["n"]),
                }
            )
        return {"keys": keys}

    def sign_compact(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A compact RS256 JWS over ``header`` and ``claims`` with the active key."""
        signing_input = b".".join(
            base64url_encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        signature = self._private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + base64url_encode(signature)).decode("ascii")

    def _encode(self, claims: dict[str, Any], *, header_order: tuple[str, ...]) -> str:
        """Compact RS256 JWS with the header and claims in the given key order.

        Built by hand (not ``jwt.encode``) only so the JOSE header keeps pymthouse's key
        order; verification goes through PyJWT.
        """
        values = {"alg": "RS256", "typ": ACCESS_TOKEN_JWT_TYP, "kid": self.kid}
        header = {name: values[name] for name in header_order}
        return self.sign_compact(header, claims)

    def mint_m2m_token(self, *, client_id: str, scope: str) -> tuple[str, dict[str, Any]]:
        """A client_credentials machine token (node-oidc-provider claim order)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(32),
            "sub": client_id,
            "iat": now,
            "exp": now + M2M_TOKEN_TTL_SECONDS,
            "scope": scope,
            "client_id": client_id,
            "iss": self.issuer,
            "aud": self.issuer,
        }
        return self._encode(claims, header_order=("alg", "typ", "kid")), claims

    def mint_user_token(
        self,
        *,
        app_id: str,
        external_user_id: str,
        app_user_id: str,
        scopes: list[str],
        billing_subject_key: str,
    ) -> tuple[str, dict[str, Any]]:
        """A programmatic user token (sub = app_users.id), 900 s."""
        return self._mint_pymthouse_token(
            app_id=app_id,
            external_user_id=external_user_id,
            user_type="app_user",
            subject=app_user_id,
            scopes=scopes,
            billing_subject_key=billing_subject_key,
            ttl=USER_TOKEN_TTL_SECONDS,
        )

    def mint_signer_token(
        self, *, app_id: str, external_user_id: str, billing_subject_key: str
    ) -> tuple[str, dict[str, Any]]:
        """A signer JWT (sub = external user id, scope sign:job), 300 s."""
        return self._mint_pymthouse_token(
            app_id=app_id,
            external_user_id=external_user_id,
            user_type="external_user",
            subject=external_user_id,
            scopes=["sign:job"],
            billing_subject_key=billing_subject_key,
            ttl=SIGNER_TOKEN_TTL_SECONDS,
        )

    def _mint_pymthouse_token(
        self,
        *,
        app_id: str,
        external_user_id: str,
        user_type: str,
        subject: str,
        scopes: list[str],
        billing_subject_key: str,
        ttl: int,
    ) -> tuple[str, dict[str, Any]]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "scope": " ".join(scopes),
            "scp": list(scopes),
            "client_id": app_id,
            "external_user_id": external_user_id,
            "user_type": user_type,
            "billing_subject_key": billing_subject_key,
            "cost_owner_user_id": billing_subject_key,
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": subject,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }
        return self._encode(claims, header_order=("alg", "kid", "typ")), claims

    def verify(self, token: str) -> dict[str, Any]:
        """Verify an RS256 token minted by this process: signature, iss, aud = issuer, exp, nbf."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            keys = dict([(self.kid, self._public_key), *self._retired])
            if kid not in keys:
                raise TokenError("invalid token")
            claims: dict[str, Any] = jwt.decode(
                token,
                keys[kid],
                algorithms=["RS256"],
                audience=self.issuer,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError('"exp" claim timestamp check failed') from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid token") from exc
        return claims


def token_scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes from ``scope`` (space or comma separated), else ``scp`` (pymthouse's parsing)."""
    scope = claims.get("scope")
    if isinstance(scope, str) and scope.strip():
        return [part for part in scope.replace(",", " ").split() if part]
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [str(part) for part in scp]
    return []


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims of a JWT without verification, for the request log only ({} if not a JWT)."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims
