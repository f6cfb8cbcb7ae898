"""One upstream's request path, Envoy's router: attempts under one deadline, retried elsewhere.

forward(request)
  ├─ admit: size limit, deadline, rate limit, bulkhead
  └─ attempt loop: choose host → pool slot → HTTP exchange → record outcome
                    → retry?  (policy, budget, backoff that ends before the deadline)

With ``hedge:`` an attempt of a request that is safe to replay may become a race (hedge.py): the
same request on another endpoint once the first has been slow for the hedge delay. Each hedge is
an attempt (counted in the reply's ``attempts``), spends from the retry budget, and lives under the
same deadline.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace

from gateway.clock import Clock, Deadline
from gateway.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    GatewayError,
    PayloadTooLargeError,
    PoolExhaustedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from gateway.events import (
    HedgeSent,
    HedgeWon,
    Observer,
    RetryAttempted,
    RetryBudgetExhausted,
    SecurityRefused,
)
from gateway.upstream.auth import Credential
from gateway.upstream.base import OutboundRequest, UpstreamResponse
from gateway.upstream.bulkhead import Bulkhead
from gateway.upstream.cluster import Cluster
from gateway.upstream.hedge import Hedging, race
from gateway.upstream.host import Host
from gateway.upstream.http import Exchange, HttpResult
from gateway.upstream.outcome import AttemptTimeoutError, TlsVerificationFailedError, failure_kind
from gateway.upstream.ratelimit import RateLimiter
from gateway.upstream.retry import RetryBudget, RetryPolicy, replayable
from gateway.upstream.snapshot import UpstreamSnapshot


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    attempt_timeout: float = 30.0
    connect_timeout: float = 30.0
    max_request_bytes: int = 10 * 1024 * 1024
    max_response_bytes: int = 10 * 1024 * 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class _Attempt:
    host: Host
    result: HttpResult | None
    error: UpstreamError | None
    elapsed: float


@dataclass(slots=True)
class _Progress:
    number: int = 0  # attempts started, hedges included
    hedges: int = 0


class Router:
    def __init__(
        self,
        cluster: Cluster,
        policy: RoutePolicy,
        *,
        budget: RetryBudget,
        clock: Clock,
        observer: Observer,
        rng: random.Random,
        limiter: RateLimiter | None = None,
        bulkhead: Bulkhead | None = None,
        credential: Credential | None = None,
        hedging: Hedging | None = None,
    ) -> None:
        self.cluster = cluster
        self.hedging = hedging
        self.policy = policy
        self.budget = budget
        self.limiter = limiter
        self.bulkhead = bulkhead
        self._credential = credential
        self._clock = clock
        self._observer = observer
        self._rng = rng

    @property
    def name(self) -> str:
        return self.cluster.name

    async def forward(self, request: OutboundRequest) -> UpstreamResponse:
        self._admit(request)
        if self.limiter is not None:
            await self.limiter.acquire(request.tenant, request.deadline)
        self.budget.on_request(self._clock.monotonic())
        if self.bulkhead is None:
            return await self._attempts(request)
        async with self.bulkhead.enter(request.deadline):
            return await self._attempts(request)

    def _admit(self, request: OutboundRequest) -> None:
        size = len(request.body or b"")
        if size > self.policy.max_request_bytes:
            raise PayloadTooLargeError(
                f"request body is {size} bytes, over the {self.policy.max_request_bytes}-byte limit of {self.name}"
            )
        if request.deadline.expired(self._clock):
            raise DeadlineExceededError(f"deadline passed before the request to {self.name} was sent")

    async def _attempts(self, request: OutboundRequest) -> UpstreamResponse:
        # One frame for the loop and its error bookkeeping: every resume of the request passes each frame.
        progress = _Progress()
        spent = 0.0
        previous: _Attempt | None = None
        try:
            while True:
                try:
                    host = self.cluster.choose(previous.host if previous is not None else None)
                except CircuitOpenError:
                    if previous is None:
                        raise
                    # Breakers opened meanwhile: the last answer stands.
                    return self._finish(previous, progress.number, spent)
                progress.number += 1
                attempt = await (
                    self._attempt(host, request) if self.hedging is None else self._try(host, request, progress)
                )
                spent += attempt.elapsed
                delay = self._retry_delay(request, progress.number, attempt)
                if delay is None:
                    return self._finish(attempt, progress.number, spent)
                await self._clock.sleep(delay)
                previous = attempt
        except GatewayError as exc:
            exc.attempts = exc.attempts or progress.number  # the reply reports what was tried
            raise

    async def _try(self, host: Host, request: OutboundRequest, progress: _Progress) -> _Attempt:
        """One attempt on ``host``, raced against hedges on other endpoints (with hedging only)."""
        hedging = self.hedging
        assert hedging is not None  # without hedging, _attempts calls _attempt itself
        envelope = request.envelope
        delay = hedging.delay(request.deadline.remaining(self._clock))
        left = hedging.policy.max - progress.hedges  # ``max`` is per request, retries included
        if delay is None or left <= 0 or not replayable(envelope.method, envelope.idempotency_key, request.headers):
            return await self._timed(hedging, host, request)  # still teaches the upstream's p95
        racing = [host]

        def start_hedge() -> Coroutine[object, object, _Attempt] | None:
            spare = self._hedge_host(racing, request)
            if spare is None:
                return None
            racing.append(spare)
            progress.number += 1
            progress.hedges += 1
            self._observer.on_event(HedgeSent(self.name, spare.url, progress.number))
            return self._timed(hedging, spare, request)

        started = self._clock.monotonic()
        finish = await race(
            self._timed(hedging, host, request),
            start_hedge=start_hedge,
            delay=delay,
            hedges=left,
            final=self._final,
            clock=self._clock,
        )
        if finish.by > 0 and finish.final:
            self._observer.on_event(HedgeWon(self.name, finish.outcome.host.url))
        return replace(finish.outcome, elapsed=self._clock.monotonic() - started)  # time in HTTP, not the sum

    def _hedge_host(self, racing: list[Host], request: OutboundRequest) -> Host | None:
        """Another endpoint for a hedge, its breaker permit and a retry-budget token taken; or None."""
        if request.deadline.expired(self._clock):
            return None
        try:
            spare = self.cluster.choose(avoid=racing)
        except CircuitOpenError:
            return None
        if spare in racing:  # no other endpoint is open: a hedge on the same one buys nothing
            self.cluster.release(spare)
            return None
        if not self.budget.try_spend(self._clock.monotonic()):
            self.cluster.release(spare)
            self._observer.on_event(RetryBudgetExhausted(upstream=self.name))
            return None
        return spare

    def _final(self, attempt: _Attempt) -> bool:
        """An answer that ends a race: a success, or a failure the retry policy would not retry."""
        status = attempt.result.status if attempt.result is not None else None
        return self.policy.retry.reason(replayable=True, status=status, error=attempt.error) is None

    async def _timed(self, hedging: Hedging, host: Host, request: OutboundRequest) -> _Attempt:
        """``_attempt``, its latency reported to ``hedging`` (what a learned delay is made of)."""
        started = self._clock.monotonic()
        try:
            attempt = await self._attempt(host, request)
        except asyncio.CancelledError:
            hedging.observe(self._clock.monotonic() - started)  # a loser was at least this slow
            raise
        if attempt.result is not None or isinstance(attempt.error, AttemptTimeoutError):
            hedging.observe(attempt.elapsed)  # a refused connect says nothing of answer times
        return attempt

    async def _attempt(self, host: Host, request: OutboundRequest) -> _Attempt:
        deadline = request.deadline
        remaining = deadline.remaining(self._clock)
        if remaining <= 0:
            self.cluster.release(host)
            raise DeadlineExceededError(f"deadline passed before an attempt on {self.name} could start")
        exchange = self._exchange(host, request, min(self.policy.attempt_timeout, remaining))
        started = self._clock.monotonic()
        host.active += 1
        try:
            async with self.cluster.pool.get_connection(host.url, timeout=remaining) as conn:
                result = await conn.request(exchange)
        except PoolExhaustedError as exc:
            self.cluster.release(host)
            raise (self._deadline_error(deadline, exc) or exc) from exc
        except TlsVerificationFailedError as exc:
            self._observer.on_event(
                SecurityRefused(
                    "tls_verification_failed", exc.message, upstream=self.name, request_id=request.envelope.id
                )
            )
            return self._failed(host, exc, started, deadline)
        except UpstreamError as exc:
            return self._failed(host, exc, started, deadline)
        except BaseException:
            self.cluster.release(host)  # cancelled, or an answer we refuse (too large): no verdict on the host
            raise
        finally:
            host.active -= 1
        elapsed = self._clock.monotonic() - started
        self.cluster.record(host, failure_kind(result.status, None), elapsed)
        return _Attempt(host, result, None, elapsed)

    def _failed(self, host: Host, exc: UpstreamError, started: float, deadline: Deadline) -> _Attempt:
        elapsed = self._clock.monotonic() - started
        if isinstance(exc, AttemptTimeoutError) and (timed_out := self._deadline_error(deadline, exc)):
            # The deadline, not the host, cut this attempt short: no verdict on the host.
            self.cluster.release(host)
            raise timed_out from exc
        self.cluster.record(host, failure_kind(None, exc), elapsed)
        return _Attempt(host, None, exc, elapsed)

    def _exchange(self, host: Host, request: OutboundRequest, timeout: float) -> Exchange:
        envelope = request.envelope
        headers = {**request.headers, **request.trace_headers}
        if self._credential is not None:
            headers = self._credential.apply(headers)  # the gateway's credential, never the caller's
        return Exchange(
            method=envelope.method,
            url=host.url + envelope.path,
            headers=headers,
            body=request.body,
            timeout=timeout,
            connect_timeout=self.policy.connect_timeout,
            max_response_bytes=self.policy.max_response_bytes,
        )

    def _deadline_error(self, deadline: Deadline, cause: Exception) -> UpstreamTimeoutError | None:
        if not deadline.expired(self._clock):
            return None
        # The upstream's slowness, not the publisher's: timeout, answered and never dead-lettered.
        return UpstreamTimeoutError(f"deadline for {self.name} ran out during an attempt: {cause}")

    def _retry_delay(self, request: OutboundRequest, number: int, attempt: _Attempt) -> float | None:
        policy = self.policy.retry
        if number >= policy.attempts:
            return None
        status = attempt.result.status if attempt.result is not None else None
        envelope = request.envelope
        reason = policy.reason(
            replayable=replayable(envelope.method, envelope.idempotency_key, request.headers),
            status=status,
            error=attempt.error,
        )
        if reason is None:
            return None
        delay = policy.backoff(number, self._rng)
        if attempt.result is not None:
            asked = policy.retry_after(attempt.result.headers.get("retry-after"), self._clock.time())
            delay = max(delay, asked or 0.0)
        if delay >= request.deadline.remaining(self._clock):
            return None
        if not self.budget.try_spend(self._clock.monotonic()):
            self._observer.on_event(RetryBudgetExhausted(upstream=self.name))
            return None
        self._observer.on_event(RetryAttempted(self.name, attempt.host.url, number + 1, reason))
        return delay

    def _finish(self, attempt: _Attempt, attempts: int, spent: float) -> UpstreamResponse:
        if attempt.error is not None:
            raise attempt.error
        assert attempt.result is not None  # an attempt has a result or an error
        result = attempt.result
        return UpstreamResponse(
            status=result.status,
            headers=result.headers,
            body=result.body,
            attempts=attempts,
            endpoint=attempt.host.url,
            upstream_duration=spent,
        )

    def snapshot(self) -> UpstreamSnapshot:
        return UpstreamSnapshot(
            name=self.name,
            endpoints=self.cluster.snapshot(),
            rate_limit=self.limiter.snapshot() if self.limiter is not None else None,
            bulkhead=self.bulkhead.snapshot() if self.bulkhead is not None else None,
        )

    async def aclose(self) -> None:
        await self.cluster.aclose()

    def __repr__(self) -> str:
        hedging = f" {self.hedging!r}" if self.hedging is not None else ""
        return f"<Router {self.name} attempts={self.policy.retry.attempts}{hedging} {self.cluster!r}>"
