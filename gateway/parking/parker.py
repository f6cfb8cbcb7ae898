"""The pipeline's parking desk: reads a returning copy's ticket, and plans the next park of a failed request.

Decisions are ``decide``'s (pure); this object only gathers their inputs (the upstream's tiers, the
deadline's remaining time on the clock, the answer's Retry-After) and issues the sealed headers.
The pipeline publishes the plan, and settles the original only once the broker confirmed the copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog

from gateway.access.identity import Caller, Proof
from gateway.bus.base import park_destination
from gateway.clock import Clock, Deadline
from gateway.envelope.codec import Reply
from gateway.envelope.models import RequestEnvelope
from gateway.parking.decide import LastTry, ParkPolicy, decide, may_park, retry_after_seconds, retryable
from gateway.parking.ticket import ParkTicket, Sealer, present
from gateway.upstream.base import UpstreamResponse
from gateway.upstream.snapshot import ParkingSnapshot, UpstreamSnapshot

log = structlog.get_logger("cmn.parking")

OUT_OF_TIERS = 1 << 30  # the park count of a copy whose park headers do not verify: no tier is left


@dataclass(frozen=True, slots=True)
class ParkPlan:
    destination: str  # the tier's queue or topic
    tier: int  # 0-based
    delay: int  # seconds
    count: int  # parks so far, this one included
    attempts: int  # HTTP attempts so far, over every try
    headers: Mapping[str, str]  # the sealed park headers the copy carries


class Parking:
    def __init__(
        self, policies: Mapping[str, ParkPolicy], *, sealer: Sealer, clock: Clock, seal_ttl: float = 300.0
    ) -> None:
        self._policies = dict(policies)
        self.seal_ttl = seal_ttl  # how long a seal is remembered as used: the longest deadline (MAX_TIMEOUT_MS)
        self._sealer = sealer
        self._clock = clock
        self.parked = dict.fromkeys(self._policies, 0)  # parks planned, per upstream (cmn status)
        self.returned = dict.fromkeys(self._policies, 0)  # parked copies taken back, per upstream
        self.forged = 0  # copies whose park headers did not verify

    @property
    def delays(self) -> tuple[int, ...]:
        """Every tier's delay over every upstream, once each, sorted: the queues or topics to declare."""
        return tuple(sorted({d for p in self._policies.values() for d in p.delays}))

    def snapshot(self, upstream: UpstreamSnapshot) -> UpstreamSnapshot:
        """``upstream``'s snapshot with this replica's parking of it, when it parks."""
        policy = self._policies.get(upstream.name)
        if policy is None:
            return upstream
        parking = ParkingSnapshot(policy.delays, self.parked.get(upstream.name, 0), self.returned.get(upstream.name, 0))
        return replace(upstream, parking=parking)

    def returning(self, upstream: str) -> None:
        """A verified parked copy of a request to ``upstream`` came back to this replica."""
        if upstream in self.returned:
            self.returned[upstream] += 1

    def ticket(self, proof: Proof) -> ParkTicket | None:
        """The verified ticket of a returning parked copy; None for a fresh request or a forged ticket."""
        if not present(proof.headers):
            return None
        ticket = self._sealer.read(proof)
        if ticket is None:
            self.forged += 1
            log.warning("park_headers_ignored", reason="seal does not verify", correlation_id=proof.correlation_id)
        return ticket

    @staticmethod
    def parks(proof: Proof, ticket: ParkTicket | None) -> int:
        """Parks so far: the ticket's count. A copy with park headers that do not verify (sealed by a
        replica with another PARK_SECRET, or forged) counts as out of tiers: it is served as a fresh
        publish but never parks again, else two replicas with different secrets would start its count
        and, without ``sent_at``, its deadline afresh on every return, for as long as the upstream is down."""
        if ticket is not None:
            return ticket.count
        return OUT_OF_TIERS if present(proof.headers) else 0

    def try_deadline(
        self, proof: Proof, envelope: RequestEnvelope, deadline: Deadline, ticket: ParkTicket | None
    ) -> Deadline:
        """The deadline this try runs under: the request's, cut to the upstream's try budget when the
        request could park, so that it holds a worker slot no longer than that (head-of-line)."""
        policy = self._policies.get(envelope.upstream)
        parks = self.parks(proof, ticket)
        if policy is None or policy.try_budget is None:
            return deadline
        if not may_park(
            policy, method=envelope.method, idempotency_key=envelope.idempotency_key, parks=parks,
            headers=envelope.headers,
        ):  # fmt: skip
            return deadline
        return deadline.earliest(Deadline.after(self._clock, policy.try_budget))

    def keeps(self, upstream: str) -> Callable[[UpstreamResponse], bool] | None:
        """For idempotency: an answer of this upstream that may park (502/503/504, a long Retry-After)
        is not remembered, else the parked copy would come back to that same answer for good."""
        policy = self._policies.get(upstream)
        if policy is None:
            return None

        def keep(response: UpstreamResponse) -> bool:
            retry_after = retry_after_seconds(response.headers, self._clock.time())
            return not retryable(LastTry(status=response.status, retry_after=retry_after), policy)

        return keep

    def plan(
        self,
        proof: Proof,
        *,
        source: str,
        envelope: RequestEnvelope,
        reply: Reply,
        deadline: Deadline,
        caller: Caller,
        ticket: ParkTicket | None,
    ) -> ParkPlan | None:
        """Where this failed try parks, or None (answer it). ``reply.attempts`` counts every try so far."""
        policy = self._policies.get(envelope.upstream)
        if policy is None:
            return None
        last = LastTry(
            error_code=reply.error.code if reply.error is not None else None,
            status=reply.status,
            retry_after=retry_after_seconds(reply.headers, self._clock.time()) if reply.error is None else None,
        )
        parks = self.parks(proof, ticket)
        park = decide(
            last,
            policy,
            method=envelope.method,
            idempotency_key=envelope.idempotency_key,
            remaining=deadline.remaining(self._clock),
            parks=parks,
            headers=envelope.headers,
        )
        if park is None:
            return None
        deadline_ms = int((self._clock.time() + deadline.remaining(self._clock)) * 1000)
        count = parks + 1
        attempts = reply.attempts
        headers = self._sealer.issue(proof, count=count, deadline_ms=deadline_ms, attempts=attempts, caller=caller)
        self.parked[envelope.upstream] = self.parked.get(envelope.upstream, 0) + 1
        return ParkPlan(park_destination(source, park.delay), park.tier, park.delay, count, reply.attempts, headers)

    def __repr__(self) -> str:
        parked = sum(self.parked.values())
        return f"<Parking [{len(self._policies)} upstreams, tiers {list(self.delays)}] parked={parked}>"
