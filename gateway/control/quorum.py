"""The fleet's quorum on endpoint health (issue 11, section 4), as one replica keeps it: pure and synchronous.

Each replica's latest own verdicts (``health.verdicts`` notices, gateway/envelope/health.py) are kept
by instance, with when they were last heard on this replica's monotonic clock. A replica heard within
``live_for`` (30 s) is live. An endpoint is down by quorum when at least ``quorum`` live replicas,
this one included, say so in their latest verdicts; the quorum is SHARED_HEALTH_QUORUM when set, else
a majority of the live replicas (``n // 2 + 1``, this one counted). The rules, after Polly's quorum
argument:

- one sick replica never takes an endpoint away from the others: a quorum is never less than 2,
  and the majority of two or more replicas is at least 2;
- peers only take an endpoint out (``to_take_out``): what puts it back is the local half-open probe,
  ejection expiry or health check, and a peer verdict older than this replica's last local recovery
  of that endpoint does not count, so the same old verdicts cannot take it out again;
- a replica that hears nothing from its peers falls back to local decisions: ``degraded`` when
  publishing fails or its own heartbeat has not come back for ``3`` heartbeats; then nothing is
  taken out.

Times: ``since`` and ``sent_at`` are the senders' epoch seconds (a verdict is compared with a local
recovery across clocks, which NTP keeps within far less than a breaker's open duration); a replica
is live from its notice's ``sent_at`` (so a copy published again cannot prolong it), kept on this
replica's monotonic clock, and the own heartbeat uses that clock only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.settings import DEFAULT_HEARTBEAT_MS

LIVE_FOR = 30.0  # the "replicas seen in the last 30 s"
HEARTBEAT = DEFAULT_HEARTBEAT_MS / 1000  # seconds; SHARED_HEALTH_HEARTBEAT_MS sets it
SILENT_HEARTBEATS = 3  # own heartbeats missed before the control channel counts as down
MIN_QUORUM = 2

Key = tuple[str, str]
"""(upstream, endpoint URL)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    down: bool
    since: float  # epoch seconds


@dataclass(slots=True)
class _Replica:
    heard_at: float  # monotonic, on this replica's clock
    sent_at: float  # the sender's epoch seconds of its latest notice
    verdicts: dict[Key, Verdict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes on one endpoint: ``down`` when ``votes`` reach ``quorum`` among ``live`` replicas."""

    votes: int
    quorum: int
    live: int

    @property
    def down(self) -> bool:
        return self.votes >= self.quorum


class QuorumTable:
    def __init__(
        self,
        instance: str,
        *,
        clock: Clock,
        quorum: int | None = None,
        live_for: float = LIVE_FOR,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if quorum is not None and quorum < MIN_QUORUM:
            raise ValueError(f"a quorum is at least {MIN_QUORUM}: one replica alone never decides for the others")
        self.instance = instance
        self._clock = clock
        self._quorum = quorum
        self._live_for = live_for
        self._silent_after = heartbeat * SILENT_HEARTBEATS
        self._started = clock.monotonic()
        self._peers: dict[str, _Replica] = {}
        self._own: dict[Key, Verdict] = {}
        self._recovered: dict[Key, float] = {}  # epoch seconds of the last local recovery
        self._own_heard: float | None = None  # monotonic: when our own heartbeat last came back
        self._publish_failed = False

    # -- what this replica decides by itself -------------------------------------------------
    def own(self, key: Key, down: bool, since: float) -> bool:
        """Record this replica's own verdict; True when it changed."""
        current = self._own.get(key)
        if current is not None and current.down == down:
            return False
        self._own[key] = Verdict(down, since)
        return True

    def recovered(self, key: Key, at: float) -> None:
        """A local probe, ejection expiry or health check put ``key`` back at ``at`` (epoch seconds):
        peer verdicts older than this no longer count."""
        self._recovered[key] = max(at, self._recovered.get(key, -math.inf))

    def own_verdicts(self) -> dict[Key, Verdict]:
        """What this replica publishes: down ones first (a notice is bounded)."""
        return dict(sorted(self._own.items(), key=lambda item: not item[1].down))

    # -- what the peers say ------------------------------------------------------------------
    def heard(self, instance: str, sent_at: float, verdicts: Mapping[Key, Verdict]) -> bool:
        """A replica's notice (this one's own included: that is the heartbeat coming back); False when
        it is older than the latest one heard from that replica, and ignored."""
        now = self._clock.monotonic()
        if instance == self.instance:
            self._own_heard = now
            return True
        replica = self._peers.get(instance)
        if replica is not None and sent_at < replica.sent_at:
            return False
        # Live from when it was sent, not from when it arrived: a copy of an old notice published again
        # (its signature is good for minutes) never keeps a replica live past its own last word.
        age = max(0.0, self._clock.time() - sent_at)
        self._peers[instance] = _Replica(now - age, sent_at, dict(verdicts))
        return True

    def publish_failed(self, failed: bool) -> None:
        self._publish_failed = failed

    def live_peers(self) -> list[str]:
        cutoff = self._clock.monotonic() - self._live_for
        return sorted(name for name, replica in self._peers.items() if replica.heard_at >= cutoff)

    def forget_dead(self) -> None:
        """Drop replicas silent for longer than ``live_for`` (bounded memory across restarts)."""
        live = set(self.live_peers())
        for name in [n for n in self._peers if n not in live]:
            del self._peers[name]

    @property
    def degraded(self) -> bool:
        """The control channel looks down: publishing fails, or our own heartbeat stopped coming back."""
        if self._publish_failed:
            return True
        last = self._own_heard if self._own_heard is not None else self._started
        return self._clock.monotonic() - last > self._silent_after

    def quorum(self) -> int:
        if self._quorum is not None:
            return self._quorum
        return (len(self.live_peers()) + 1) // 2 + 1

    # -- the decision ------------------------------------------------------------------------
    def tally(self, key: Key) -> Tally:
        live = self.live_peers()
        recovered = self._recovered.get(key, -math.inf)
        own = self._own.get(key)
        votes = int(own is not None and own.down)
        for name in live:
            verdict = self._peers[name].verdicts.get(key)
            if verdict is not None and verdict.down and verdict.since > recovered:
                votes += 1
        return Tally(votes, self.quorum(), len(live) + 1)

    def to_take_out(self) -> list[tuple[Key, Tally]]:
        """Endpoints the quorum says are down while this replica's own verdict does not: the ones to take
        out locally. Nothing while degraded (local decisions only)."""
        if self.degraded:
            return []
        out = []
        for key in self._candidates():
            own = self._own.get(key)
            if own is not None and own.down:
                continue
            tally = self.tally(key)
            if tally.down:
                out.append((key, tally))
        return out

    def _candidates(self) -> Iterator[Key]:
        seen: set[Key] = set()
        for name in self.live_peers():
            for key, verdict in self._peers[name].verdicts.items():
                if verdict.down and key not in seen:
                    seen.add(key)
                    yield key

    def __repr__(self) -> str:
        down = sum(v.down for v in self._own.values())
        return (
            f"<QuorumTable {self.instance} [{len(self.live_peers())} live peers, quorum {self.quorum()}"
            f"{', degraded' if self.degraded else ''} | {down} own down]>"
        )
