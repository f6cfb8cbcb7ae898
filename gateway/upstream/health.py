"""Optional active health checks: GET a path on every endpoint at an interval.

``unhealthy_threshold`` failed checks in a row take an endpoint out of rotation,
``healthy_threshold`` passed checks in a row bring it back. Checks use their own small session,
not the request pool, so a pool full of slow requests cannot make a healthy endpoint look dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.events import EndpointHealthChanged, Observer
from gateway.upstream.auth import Credential
from gateway.upstream.host import Host
from gateway.upstream.http import Exchange, exchange
from gateway.upstream.snapshot import HealthSnapshot
from gateway.upstream.tls import TlsContextProvider


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    path: str
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    expected_statuses: frozenset[int] = field(default_factory=lambda: frozenset(range(200, 300)))


class HealthChecker:
    def __init__(
        self,
        upstream: str,
        hosts: Sequence[Host],
        policy: HealthPolicy,
        *,
        clock: Clock,
        observer: Observer,
        tls: TlsContextProvider | None = None,
        credential: Credential | None = None,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self._hosts = list(hosts)
        self._clock = clock
        self._observer = observer
        self._tls = tls
        self._credential = credential  # probes of an upstream behind auth carry its credential too
        self._streaks = {h.url: 0 for h in self._hosts}  # >0: passes in a row, <0: failures in a row
        self._checked_at: dict[str, float] = {}  # epoch seconds of each host's last check
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check every ``interval`` in the background until ``aclose``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await self._clock.sleep(self.policy.interval)

    async def check_all(self) -> None:
        results = await asyncio.gather(*(self._probe(h) for h in self._hosts))
        for host, passed in zip(self._hosts, results, strict=True):
            self.observe(host, passed)

    def observe(self, host: Host, passed: bool) -> None:
        """Fold one check result into the host's streak; flip it when a threshold is reached."""
        streak = self._streaks[host.url]
        streak = max(streak, 0) + 1 if passed else min(streak, 0) - 1
        self._streaks[host.url] = streak
        self._checked_at[host.url] = self._clock.time()
        if host.healthy and -streak >= self.policy.unhealthy_threshold:
            self._flip(host, healthy=False)
        elif not host.healthy and streak >= self.policy.healthy_threshold:
            self._flip(host, healthy=True)

    def snapshot(self) -> dict[str, HealthSnapshot]:
        """Each host's health by URL: in rotation or not, the last result and the streak behind it."""
        return {host.url: self._host_snapshot(host) for host in self._hosts}

    def _host_snapshot(self, host: Host) -> HealthSnapshot:
        streak = self._streaks[host.url]
        return HealthSnapshot(
            healthy=host.healthy,
            last="passed" if streak > 0 else "failed" if streak < 0 else None,
            consecutive_passes=max(streak, 0),
            consecutive_failures=max(-streak, 0),
            checked_at=self._checked_at.get(host.url),
        )

    def _flip(self, host: Host, *, healthy: bool) -> None:
        host.healthy = healthy
        self._observer.on_event(EndpointHealthChanged(self.upstream, host.url, healthy))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=1), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def _probe(self, host: Host) -> bool:
        context = self._tls.context_for(self.upstream) if self._tls is not None else None
        probe = Exchange(
            method="GET",
            url=host.url + self.policy.path,
            headers=self._credential.apply({}) if self._credential is not None else {},
            body=None,
            timeout=self.policy.timeout,
            connect_timeout=self.policy.timeout,
            max_response_bytes=64 * 1024,
            ssl_context=context,
        )
        try:
            result = await exchange(self._client(), probe)
        except GatewayError:
            return False
        return result.status in self.policy.expected_statuses

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        unhealthy = [h.url for h in self._hosts if not h.healthy]
        return f"<HealthChecker {self.upstream} {self.policy.path} every {self.policy.interval}s unhealthy={unhealthy}>"
