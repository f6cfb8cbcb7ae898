"""The three questions the pipeline asks before any network I/O, behind one object.

reply_to(transport, address)   may a reply go there?            reply_to_refused
identify(proof)                who sent this? (each signature once)  unauthenticated
authorize(caller, ...)         may they, and for which tenant?  forbidden
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.access import signature
from gateway.access.identity import Caller, Identifier, Proof
from gateway.access.policy import AccessPolicy
from gateway.access.replay import ReplayRecord
from gateway.access.reply_address import ReplyAddresses
from gateway.envelope.models import RequestEnvelope
from gateway.errors import ParkedCopyReusedError, UnauthenticatedError


@dataclass(frozen=True, slots=True)
class Guard:
    identifier: Identifier
    policy: AccessPolicy
    reply_addresses: ReplyAddresses
    replays: ReplayRecord

    def reply_to(self, transport: str, address: str) -> None:
        self.reply_addresses.check(transport, address)

    async def identify(self, proof: Proof) -> Caller:
        caller = self.identifier.identify(proof)
        if caller.via == "signature" and not proof.redelivered:
            seal = proof.headers[signature.SIGNATURE]
            if not await self.replays.first_use(seal, proof.position, self.identifier.window):
                raise UnauthenticatedError("this signed message was already used: sign each message anew")
        return caller

    async def resume(self, proof: Proof, caller: Caller, seal: str, ttl: float) -> Caller:
        """The caller of a parked copy, as its verified park seal names it (gateway.parking.ticket):
        established on first arrival, not again. Each seal is accepted once, like a signature."""
        if not proof.redelivered and not await self.replays.first_use(seal, proof.position, ttl):
            raise ParkedCopyReusedError("this parked copy was already used")
        return caller

    def authorize(self, caller: Caller, envelope: RequestEnvelope) -> str:
        """The tenant the request is counted under."""
        return self.policy.authorize(
            caller,
            upstream=envelope.upstream,
            method=envelope.method,
            path=envelope.path,
            tenant=envelope.tenant,
            headers=envelope.headers,
        )
