"""Who sent a request: only what the broker checked or a signature proves.

1. RabbitMQ's ``user_id`` property: the broker refuses a message whose ``user_id`` is not the
   connection's user, so it is the principal (and takes precedence over a signature).
2. A signed envelope (``signature.py``): a good signature by a known key names the key's principal;
   a signature that is present but bad, stale or from an unknown key is ``unauthenticated``.
3. Neither: anonymous, unless REQUIRE_IDENTITY refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.access import signature
from gateway.access.config import ANONYMOUS
from gateway.clock import Clock
from gateway.errors import UnauthenticatedError

# A signature dated this far in the future is refused too: clocks drift, but not by minutes.
MAX_CLOCK_SKEW = 30.0


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal of one request (None when anonymous) and how it was established."""

    principal: str | None
    via: Literal["user_id", "signature", "none"] = "none"

    @property
    def name(self) -> str:
        """The principal, or ``anonymous``: what idempotency scopes and logs use."""
        return self.principal if self.principal is not None else ANONYMOUS


ANONYMOUS_CALLER = Caller(None)


@dataclass(frozen=True, slots=True)
class SigningKey:
    principal: str
    secret: bytes

    def __repr__(self) -> str:
        return f"<SigningKey for {self.principal}>"  # never the secret


class Proof(Protocol):
    """What a message offers as proof of identity: the transport's fields and the raw body. A bus
    ``Delivery`` is one as it stands, so the request path builds nothing to be identified."""

    @property
    def user_id(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def body(self) -> bytes: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def position(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Signed:
    """A ``Proof`` written out field by field (tests, and callers without a bus delivery)."""

    user_id: str | None
    headers: Mapping[str, str]
    correlation_id: str | None
    reply_to: str | None
    body: bytes
    redelivered: bool = False  # the broker says this very message came before (RabbitMQ)
    position: str | None = None  # where the broker keeps it (Kafka topic/partition/offset)


class Identifier:
    def __init__(self, keys: Mapping[str, SigningKey], *, clock: Clock, max_age: float, require_identity: bool) -> None:
        self._keys = dict(keys)
        self._clock = clock
        self._max_age_ms = max_age * 1000
        self._require = require_identity

    @property
    def window(self) -> float:
        """Seconds a signature stays acceptable: its max age plus the future skew."""
        return self._max_age_ms / 1000 + MAX_CLOCK_SKEW

    def signing_key(self, key_id: str) -> SigningKey | None:
        """The key ``key_id`` (the gateway's own notices on cmn.control are signed with it: CONTROL_KEY_ID)."""
        return self._keys.get(key_id)

    def identify(self, proof: Proof) -> Caller:
        if proof.user_id:
            if proof.user_id == ANONYMOUS:
                raise UnauthenticatedError(f"the name {ANONYMOUS!r} is reserved for callers without a principal")
            return Caller(proof.user_id, "user_id")
        if signature.present(proof.headers):
            return self._verified(proof)
        if self._require:
            raise UnauthenticatedError("this gateway requires a principal: publish with a user_id or sign the envelope")
        return ANONYMOUS_CALLER

    def _verified(self, proof: Proof) -> Caller:
        headers = proof.headers
        key_id = headers.get(signature.KEY_ID, "")
        claimed = headers.get(signature.SIGNATURE, "")
        signed_at = _epoch_ms(headers.get(signature.SIGNED_AT, ""))
        if not key_id or not claimed or signed_at is None:
            raise UnauthenticatedError(f"a signed envelope needs all of {', '.join(signature.HEADERS)}")
        key = self._keys.get(key_id)
        if key is None:
            raise UnauthenticatedError("the signing key is not known to this gateway")
        age_ms = self._clock.time() * 1000 - signed_at
        if age_ms > self._max_age_ms or age_ms < -MAX_CLOCK_SKEW * 1000:
            raise UnauthenticatedError(f"the signature is {age_ms / 1000:.0f} s old, outside the accepted window")
        good = signature.matches(
            key.secret,
            claimed,
            signed_at=signed_at,
            key_id=key_id,
            correlation_id=proof.correlation_id or "",
            reply_to=proof.reply_to or "",
            body=proof.body,
        )
        if not good:
            raise UnauthenticatedError("the signature does not match the message")
        return Caller(key.principal, "signature")

    def __repr__(self) -> str:
        return f"<Identifier [{len(self._keys)} keys] require_identity={self._require}>"


def _epoch_ms(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 16 else None
