"""The park headers: what a parked copy carries, sealed by the gateway so that no publisher can forge it.

A parked copy keeps the original body (so a request signature still covers it), reply address,
correlation id and headers, and adds::

    x-cmn-park-count      parks so far (1 on the first parked copy)
    x-cmn-park-deadline   epoch ms the deadline falls on, as set on first arrival (from sent_at,
                          else the first publish): it keeps counting, never starts again
    x-cmn-park-attempts   HTTP attempts made so far, over every try (the final reply's ``attempts``)
    x-cmn-park-principal  who the gateway established the caller to be, on first arrival
    x-cmn-park-via        how: user_id, signature or none
    x-cmn-park-nonce      random, so every parked copy has its own seal
    x-cmn-park-seal       "v1=" + hex HMAC-SHA256(PARK_SECRET, the six above, correlation id and
                          reply address, each length-prefixed, then the body)

Why a seal: RabbitMQ drops ``user_id`` on the copy (the broker refuses a user_id other than the
publishing connection's), and a signed request's signature is accepted once only, so the returning
copy cannot prove its caller the way the original did. ``x-death`` cannot stand in for that proof:
any publisher may write it. The seal carries the principal the gateway verified instead, bound to
the body, reply address and correlation id, so a hostile publisher can neither name a principal,
nor move a copy's replies elsewhere, nor reset its park count or deadline (``PARK_SECRET`` is the
gateway fleet's own, never on the bus). A seal is accepted once, like a signature
(``Guard.resume``): a captured parked copy published again is refused. A copy whose park headers do
not verify is treated as a fresh publish (the headers are ignored) that never parks again
(``Parking.parks``): that is all a forger could get by publishing anew anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from gateway.access.identity import Caller, Proof

COUNT = "x-cmn-park-count"
DEADLINE = "x-cmn-park-deadline"
ATTEMPTS = "x-cmn-park-attempts"
PRINCIPAL = "x-cmn-park-principal"
VIA = "x-cmn-park-via"
NONCE = "x-cmn-park-nonce"
SEAL = "x-cmn-park-seal"
HEADERS = (COUNT, DEADLINE, ATTEMPTS, PRINCIPAL, VIA, NONCE, SEAL)
VERSION = "v1="
_VIAS = ("user_id", "signature", "none")
_MAX_FIELD = 256  # a header we read is bounded before it is used


@dataclass(frozen=True, slots=True)
class ParkTicket:
    """What a verified parked copy tells: its park count, deadline, attempts so far and caller."""

    count: int
    deadline_ms: int
    attempts: int
    caller: Caller
    seal: str


class Sealer:
    """Issues and verifies park headers with the fleet's ``PARK_SECRET``."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the park secret must be at least 16 bytes")
        self._secret = secret

    def issue(self, proof: Proof, *, count: int, deadline_ms: int, attempts: int, caller: Caller) -> dict[str, str]:
        """The park headers of the next parked copy of ``proof`` (body and addressing unchanged)."""
        fields = {
            COUNT: str(count),
            DEADLINE: str(deadline_ms),
            ATTEMPTS: str(attempts),
            PRINCIPAL: caller.principal or "",
            VIA: caller.via,
            NONCE: secrets.token_hex(16),
        }
        return {**fields, SEAL: self._seal(fields, proof)}

    def read(self, proof: Proof) -> ParkTicket | None:
        """The ticket of a parked copy whose seal verifies; None otherwise (absent, malformed or forged)."""
        headers = proof.headers
        if SEAL not in headers:
            return None
        fields = {name: headers.get(name, "") for name in HEADERS[:-1]}
        claimed = headers[SEAL]
        if any(len(v) > _MAX_FIELD for v in (*fields.values(), claimed)):
            return None
        numbers = [_number(fields[name]) for name in (COUNT, DEADLINE, ATTEMPTS)]
        via = fields[VIA]
        if None in numbers or via not in _VIAS:
            return None
        if not hmac.compare_digest(self._seal(fields, proof).encode(), claimed.encode("ascii", "replace")):
            return None
        count, deadline, attempts = cast(list[int], numbers)
        principal = fields[PRINCIPAL] or None
        return ParkTicket(
            count, deadline, attempts, Caller(principal, cast(Literal["user_id", "signature", "none"], via)), claimed
        )

    def _seal(self, fields: Mapping[str, str], proof: Proof) -> str:
        parts = [*(fields[name] for name in HEADERS[:-1]), proof.correlation_id or "", proof.reply_to or ""]
        # Length-prefixed, so no two different sets of fields read as the same text.
        text = "".join(f"{len(part)}:{part}\n" for part in parts)
        mac = hmac.new(self._secret, text.encode(), hashlib.sha256)
        mac.update(proof.body)
        return VERSION + mac.hexdigest()

    def __repr__(self) -> str:
        return "<Sealer>"  # never the secret


def present(headers: Mapping[str, str]) -> bool:
    return any(name in headers for name in HEADERS)


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 16 else None
