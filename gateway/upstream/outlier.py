"""Passive outlier detection, Envoy's: consecutive failures eject a host for a while.

The n-th ejection in a row lasts ``base_ejection_time * n`` (capped at ``max_ejection_time``), so a
flapping host stays out longer each time; a host that stays clean for ``max_ejection_time`` after
coming back starts again from the base. At most ``max_ejection_percent`` of the hosts are out at
once (at least one may always be ejected, as in Envoy). Ejected hosts come back by themselves:
``refresh`` is called on every pick and does work only when an ejection is due to end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.events import EndpointEjected, EndpointRestored, Observer
from gateway.upstream.host import Host
from gateway.upstream.kinds import FailureKind
from gateway.upstream.snapshot import OutlierSnapshot, wall_time


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5
    base_ejection_time: float = 5.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0


class OutlierDetector:
    def __init__(
        self,
        upstream: str,
        hosts: Sequence[Host],
        policy: OutlierPolicy,
        *,
        clock: Clock,
        observer: Observer,
        on_eject: Callable[[Host], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self._hosts = list(hosts)
        self._clock = clock
        self._observer = observer
        self._on_eject = on_eject
        self._next_restore = math.inf
        self._restored_at: dict[str, float] = {}

    def record(self, host: Host, kind: FailureKind | None) -> None:
        if kind is None:
            host.consecutive_failures = 0
            return
        host.consecutive_failures += 1
        if host.consecutive_failures >= self.policy.consecutive_failures and not host.ejected:
            self._maybe_eject(host, f"{host.consecutive_failures} consecutive failures, last {kind}")

    def refresh(self) -> None:
        """Bring back every host whose ejection has run out."""
        now = self._clock.monotonic()
        if now < self._next_restore:
            return
        self._next_restore = math.inf
        for host in self._hosts:
            if host.ejected_until is None:
                continue
            if host.ejected_until <= now:
                self._restore(host, now)
            else:
                self._next_restore = min(self._next_restore, host.ejected_until)

    def eject(self, host: Host, reason: str) -> bool:
        """Eject ``host`` now, within ``max_ejection_percent`` (the fleet's quorum said it is down, on an
        upstream without breakers); False when it is ejected already or there is no room. It comes back
        when the ejection runs out, as any ejection does."""
        if host.ejected:
            return False
        return self._maybe_eject(host, reason)

    def _maybe_eject(self, host: Host, reason: str) -> bool:
        if not self._room_to_eject():
            return False
        now = self._clock.monotonic()
        if now - self._restored_at.get(host.url, -math.inf) > self.policy.max_ejection_time:
            host.ejections = 0  # clean long enough: forget earlier ejections
        host.ejections += 1
        duration = min(self.policy.base_ejection_time * host.ejections, self.policy.max_ejection_time)
        host.ejected_until = now + duration
        host.consecutive_failures = 0
        self._next_restore = min(self._next_restore, host.ejected_until)
        self._observer.on_event(EndpointEjected(self.upstream, host.url, duration, reason))
        if self._on_eject is not None:
            self._on_eject(host)
        return True

    def _room_to_eject(self) -> bool:
        if self.policy.max_ejection_percent <= 0:
            return False
        ejected = sum(1 for h in self._hosts if h.ejected)
        allowed = max(1, math.floor(len(self._hosts) * self.policy.max_ejection_percent / 100))
        return ejected < allowed

    def _restore(self, host: Host, now: float) -> None:
        host.ejected_until = None
        host.consecutive_failures = 0
        self._restored_at[host.url] = now
        self._observer.on_event(EndpointRestored(self.upstream, host.url))

    def snapshot(self) -> dict[str, OutlierSnapshot]:
        """Each host's ejection by URL; one whose time ran out (restored at the next pick) is not ejected."""
        now = self._clock.monotonic()
        return {
            host.url: OutlierSnapshot(
                ejected_until=(
                    wall_time(self._clock, host.ejected_until)
                    if host.ejected_until is not None and host.ejected_until > now
                    else None
                ),
                ejections=host.ejections,
                consecutive_failures=host.consecutive_failures,
            )
            for host in self._hosts
        }

    def __repr__(self) -> str:
        ejected = [h.url for h in self._hosts if h.ejected]
        return f"<OutlierDetector {self.upstream} ejected={ejected}>"
