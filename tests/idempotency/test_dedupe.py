"""Idempotency keys across replicas: two Deduplicators sharing the real Redis act as two gateways."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.clock import Deadline, SystemClock
from gateway.errors import DeadlineExceededError, IdempotencyMismatchError, UpstreamTimeoutError
from gateway.idempotency import Deduplicator, IdempotencyKey, MemoryIdempotencyStore, RedisIdempotencyStore
from gateway.testing import FakeClock
from gateway.upstream.base import UpstreamResponse

REDIS = "redis://127.0.0.1:6379/0"
CLOCK = SystemClock()


def envelope(
    key: str | None = "charge-1", *, principal: str = "billing", path: str = "/charges"
) -> IdempotencyKey | None:
    """The scoped key the pipeline would build for a POST with this idempotency key (None: no key)."""
    if key is None:
        return None
    return IdempotencyKey.of(
        principal=principal, upstream="payments", key=key, method="POST", path=path, body=b"{}", headers={}
    )


def response(body: bytes = b"ok") -> UpstreamResponse:
    return UpstreamResponse(201, {"content-type": "text/plain"}, body, 1, "http://pay-a", 0.01)


class Upstream:
    """Counts calls; each call waits for ``gate`` (so duplicates really overlap), then answers or fails."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.fail_first = False

    async def __call__(self) -> UpstreamResponse:
        self.calls += 1
        await self.gate.wait()
        if self.fail_first and self.calls == 1:
            raise UpstreamTimeoutError("first call timed out")
        return response(f"call-{self.calls}".encode())


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Deduplicator, Deduplicator]]:
    prefix = f"cmn-test:{uuid.uuid4().hex}:"
    stores = [RedisIdempotencyStore.from_url(REDIS, prefix=prefix) for _ in range(2)]
    yield Deduplicator(stores[0], 60, CLOCK), Deduplicator(stores[1], 60, CLOCK)
    for store in stores:
        await store.aclose()


async def overlapping(
    one: Deduplicator, two: Deduplicator, env: IdempotencyKey | None, upstream: Upstream
) -> tuple[asyncio.Task[UpstreamResponse], asyncio.Task[UpstreamResponse]]:
    """The same request on two replicas, the second arriving while the first is at the upstream."""
    deadline = Deadline.after(CLOCK, 5)
    first = asyncio.create_task(one.run(env, deadline, upstream))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(two.run(env, deadline, upstream))
    await asyncio.sleep(0.1)
    upstream.gate.set()
    return first, second


async def test_duplicates_on_two_replicas_make_one_upstream_call(
    replicas: tuple[Deduplicator, Deduplicator],
) -> None:
    one, two = replicas
    upstream, env = Upstream(), envelope()
    first, second = await overlapping(one, two, env, upstream)
    a, b = await asyncio.gather(first, second)
    assert upstream.calls == 1
    assert a.body == b.body == b"call-1"
    assert (a.attempts, b.attempts) == (1, 0)  # the duplicate was answered from the first result


async def test_a_failed_first_call_lets_the_duplicate_try_itself(
    replicas: tuple[Deduplicator, Deduplicator],
) -> None:
    one, two = replicas
    upstream, env = Upstream(), envelope()
    upstream.fail_first = True
    first, second = await overlapping(one, two, env, upstream)
    with pytest.raises(UpstreamTimeoutError):
        await first
    assert (await second).body == b"call-2"
    assert upstream.calls == 2


async def test_a_duplicate_waits_no_longer_than_its_own_deadline(
    replicas: tuple[Deduplicator, Deduplicator],
) -> None:
    one, two = replicas
    upstream, env = Upstream(), envelope()
    owner = asyncio.create_task(one.run(env, Deadline.after(CLOCK, 5), upstream))
    await asyncio.sleep(0.05)
    with pytest.raises(DeadlineExceededError, match="another replica"):
        await two.run(env, Deadline.after(CLOCK, 0.2), upstream)
    upstream.gate.set()
    await owner
    assert upstream.calls == 1


async def test_requests_without_a_key_are_never_deduplicated() -> None:
    dedupe = Deduplicator(MemoryIdempotencyStore(FakeClock()), 60, FakeClock())
    upstream = Upstream()
    upstream.gate.set()
    deadline = Deadline(1e12)
    await dedupe.run(envelope(None), deadline, upstream)
    await dedupe.run(envelope(None), deadline, upstream)
    assert upstream.calls == 2


async def test_in_one_process_concurrent_duplicates_share_the_first_call() -> None:
    clock = FakeClock()
    dedupe = Deduplicator(MemoryIdempotencyStore(clock), 60, clock)
    upstream, env = Upstream(), envelope()
    calls = [asyncio.create_task(dedupe.run(env, Deadline(1e12), upstream)) for _ in range(5)]
    await asyncio.sleep(0)
    upstream.gate.set()
    results = await asyncio.gather(*calls)
    assert upstream.calls == 1
    assert sorted(r.attempts for r in results) == [0, 0, 0, 0, 1]
    later = await dedupe.run(env, Deadline(1e12), upstream)
    assert (later.body, later.attempts, upstream.calls) == (b"call-1", 0, 1)


async def test_concurrent_duplicates_in_one_replica_while_the_store_answers(
    replicas: tuple[Deduplicator, Deduplicator],
) -> None:
    """The store lookup suspends (a network round trip): duplicates arriving meanwhile still share one call."""
    one, _ = replicas
    upstream, env = Upstream(), envelope()
    upstream.gate.set()
    results = await asyncio.gather(*(one.run(env, Deadline.after(CLOCK, 5), upstream) for _ in range(4)))
    assert upstream.calls == 1
    assert sorted(r.attempts for r in results) == [0, 0, 0, 1]


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_another_caller_never_sees_a_result_under_the_same_key(
    store: str, replicas: tuple[Deduplicator, Deduplicator]
) -> None:
    one, two = replicas if store == "redis" else (Deduplicator(MemoryIdempotencyStore(CLOCK), 60, CLOCK),) * 2
    upstream = Upstream()
    upstream.gate.set()
    first = await one.run(envelope(principal="billing"), Deadline.after(CLOCK, 5), upstream)
    other = await two.run(envelope(principal="mallory"), Deadline.after(CLOCK, 5), upstream)
    assert (first.body, other.body, upstream.calls) == (b"call-1", b"call-2", 2)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_key_reused_for_a_different_request_is_refused(
    store: str, replicas: tuple[Deduplicator, Deduplicator]
) -> None:
    one, two = replicas if store == "redis" else (Deduplicator(MemoryIdempotencyStore(CLOCK), 60, CLOCK),) * 2
    upstream = Upstream()
    upstream.gate.set()
    await one.run(envelope(path="/charges"), Deadline.after(CLOCK, 5), upstream)
    with pytest.raises(IdempotencyMismatchError, match="reused for a different request") as refused:
        await two.run(envelope(path="/refunds"), Deadline.after(CLOCK, 5), upstream)
    assert (refused.value.code, refused.value.security_kind, upstream.calls) == (
        "invalid_request",
        "idempotency_mismatch",
        1,
    )


async def test_a_different_request_is_refused_while_the_first_is_still_running() -> None:
    dedupe = Deduplicator(MemoryIdempotencyStore(CLOCK), 60, CLOCK)
    upstream = Upstream()
    first = asyncio.create_task(dedupe.run(envelope(path="/charges"), Deadline.after(CLOCK, 5), upstream))
    await asyncio.sleep(0.01)
    with pytest.raises(IdempotencyMismatchError):
        await dedupe.run(envelope(path="/refunds"), Deadline.after(CLOCK, 5), upstream)
    upstream.gate.set()
    assert (await first).body == b"call-1"


def test_the_fingerprint_covers_method_path_body_and_headers() -> None:
    base = {"principal": "b", "upstream": "u", "key": "k", "method": "POST", "path": "/a", "body": b"1"}
    reference = IdempotencyKey.of(**base, headers={"X-A": "1"})  # type: ignore[arg-type]
    variants = [
        {**base, "method": "PUT"},
        {**base, "path": "/b"},
        {**base, "body": b"2"},
    ]
    for variant in variants:
        assert IdempotencyKey.of(**variant, headers={"X-A": "1"}).fingerprint != reference.fingerprint  # type: ignore[arg-type]
    assert IdempotencyKey.of(**base, headers={"X-A": "2"}).fingerprint != reference.fingerprint  # type: ignore[arg-type]
    assert IdempotencyKey.of(**base, headers={"x-a": "1"}).fingerprint == reference.fingerprint  # type: ignore[arg-type]
    assert IdempotencyKey.of(**{**base, "principal": "c"}, headers={}).scope != reference.scope  # type: ignore[arg-type]
