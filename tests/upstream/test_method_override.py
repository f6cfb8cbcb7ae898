"""Red team: a method override header must not make a POST look safe to send twice.

Rails, ASP.NET, Symfony and Google's APIs run a ``GET`` carrying ``X-HTTP-Method-Override: POST`` as
a POST. The gateway decided "safe to replay" on the envelope's method alone, so such a request was
hedged and retried: one caller's charge ran twice upstream. Real loopback endpoints count the copies.
"""

from __future__ import annotations

import itertools

import pytest

from gateway.events import HedgeSent, RecordingObserver, RetryAttempted
from gateway.upstream.retry import replayable
from tests.fixtures.upstreams import StartUpstream
from tests.upstream.helpers import events_of, outbound
from tests.upstream.scripted import Copy, Script, pair
from tests.upstream.test_hedging import forwarder

_paths = itertools.count()


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override"])
async def test_a_get_overridden_to_post_is_never_hedged(start_upstream: StartUpstream, name: str) -> None:
    a, b = await pair(start_upstream, Script(Copy(delay=0.3)))  # slow past the 50 ms hedge delay
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        response = await fwd.forward(outbound("svc", path=f"/pay/{next(_paths)}", headers={name: "POST"}))
    assert response.status == 200 and response.attempts == 1
    assert a.hits + b.hits == 1 and not events_of(observer, HedgeSent)


async def test_a_get_overridden_to_post_is_not_retried_after_the_upstream_saw_it(
    start_upstream: StartUpstream,
) -> None:
    a, b = await pair(start_upstream, Script(Copy(status=503), Copy()))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        request = outbound("svc", path=f"/pay/{next(_paths)}", headers={"X-HTTP-Method-Override": " post "})
        response = await fwd.forward(request)
    assert response.status == 503 and response.attempts == 1
    assert a.hits + b.hits == 1 and not events_of(observer, RetryAttempted)


async def test_an_override_to_an_idempotent_method_is_still_retried(start_upstream: StartUpstream) -> None:
    a, b = await pair(start_upstream, Script(Copy(status=503), Copy()))
    observer = RecordingObserver()
    async with forwarder(observer, a, b) as fwd:
        request = outbound("svc", path=f"/pay/{next(_paths)}", headers={"X-HTTP-Method-Override": "DELETE"})
        response = await fwd.forward(request)
    assert response.status == 200 and response.attempts == 2


def test_replayable_reads_method_overrides() -> None:
    assert not replayable("GET", None, {"X-HTTP-Method-Override": "PATCH"})
    assert not replayable("PUT", None, {"x-method-override": "post"})
    assert replayable("GET", None, {"X-HTTP-Method-Override": "HEAD"})
    assert replayable("GET", "key-1", {"X-HTTP-Method-Override": "POST"})  # the key makes it safe
