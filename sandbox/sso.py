"""State of the sandbox's browser sign-in (authorization code): identities, codes, knobs.

Kept apart from the route module so :class:`sandbox.state.SandboxState` can own and reset
it without importing Starlette.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from typing import Any

AUTHORIZATION_CODE_TTL_SECONDS = 600  # node-oidc-provider ttl.AuthorizationCode (§3.4)
INTERACTION_TTL_SECONDS = 1800  # ttl.Interaction
ID_TOKEN_TTL_SECONDS = 3600  # ttl.IdToken
ACCESS_TOKEN_TTL_SECONDS = 3600  # accessTokenTTL

# Ways the next ID token(s) can be wrong, for relying-party tests.
MISBEHAVIOURS = (
    "wrong_aud",  # aud = another client
    "extra_aud",  # aud = [our client, another client]
    "wrong_iss",  # iss = another issuer
    "bad_nonce",  # nonce = a different value
    "missing_nonce",  # no nonce claim
    "expired",  # exp two hours in the past
    "alg_none",  # unsigned, header alg "none"
    "hs256_public_key",  # HS256 with the PEM public key as the HMAC secret
    "unknown_kid",  # signed with a key that is not in the JWKS
)
USERINFO_MODES = ("refuse", "serve")


@dataclasses.dataclass(frozen=True)
class Identity:
    """A person who can sign in at the sandbox's login page."""

    sub: str
    email: str
    name: str
    email_verified: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "email": self.email,
            "name": self.name,
            "emailVerified": self.email_verified,
        }


@dataclasses.dataclass(frozen=True)
class Interaction:
    """An authorization request waiting for the person to pick an identity."""

    uid: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    created_at: float


@dataclasses.dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    identity: Identity
    created_at: float
    used: bool = False


def seeded_identities(issuer: str) -> list[Identity]:
    """Stable people (sub derived from the issuer, like a pymthouse user UUID)."""

    def sub(name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer}#{name}"))

    return [
        Identity(sub("ada"), "ada@sandbox.pymthouse.test", "Ada Lovelace"),
        Identity(sub("grace"), "grace@sandbox.pymthouse.test", "Grace Hopper"),
        Identity(sub("linus"), "linus@sandbox.pymthouse.test", "Linus (unverified)", False),
    ]


class SsoState:
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.identities: dict[str, Identity] = {}
        self.interactions: dict[str, Interaction] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.misbehave: str | None = None
        self.misbehave_times: int | None = None
        self.userinfo_mode = "refuse"
        self.reset()

    def reset(self) -> None:
        self.identities = {identity.sub: identity for identity in seeded_identities(self.issuer)}
        self.interactions.clear()
        self.codes.clear()
        self.misbehave = None
        self.misbehave_times = None
        self.userinfo_mode = "refuse"

    def add_identity(self, *, email: str, name: str, sub: str | None, verified: bool) -> Identity:
        identity = Identity(sub or str(uuid.uuid4()), email, name, verified)
        self.identities[identity.sub] = identity
        return identity

    def start(self, **fields: Any) -> Interaction:
        self._expire()
        interaction = Interaction(uid=secrets.token_urlsafe(16), created_at=time.time(), **fields)
        self.interactions[interaction.uid] = interaction
        return interaction

    def issue_code(self, interaction: Interaction, identity: Identity) -> AuthorizationCode:
        del self.interactions[interaction.uid]
        code = AuthorizationCode(
            code=secrets.token_urlsafe(32),
            client_id=interaction.client_id,
            redirect_uri=interaction.redirect_uri,
            scope=interaction.scope,
            nonce=interaction.nonce,
            code_challenge=interaction.code_challenge,
            identity=identity,
            created_at=time.time(),
        )
        self.codes[code.code] = code
        return code

    def take_misbehaviour(self) -> str | None:
        """The misbehaviour to apply to the ID token being minted (consumes one of ``times``)."""
        mode = self.misbehave
        if mode is not None and self.misbehave_times is not None:
            self.misbehave_times -= 1
            if self.misbehave_times <= 0:
                self.misbehave, self.misbehave_times = None, None
        return mode

    def _expire(self) -> None:
        now = time.time()
        ttl = INTERACTION_TTL_SECONDS
        stale = [u for u, i in self.interactions.items() if now - i.created_at > ttl]
        for uid in stale:
            del self.interactions[uid]
        for code in [
            c for c, a in self.codes.items() if now - a.created_at > AUTHORIZATION_CODE_TTL_SECONDS
        ]:
            del self.codes[code]
