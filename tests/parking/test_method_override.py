"""Red team: a GET that an override header turns into a POST must not park (its copy would run it again)."""

from __future__ import annotations

from tests.fixtures.upstreams import StartUpstream
from tests.parking.test_pipeline_parking import flaky_upstream, idle, running


async def test_a_get_overridden_to_post_never_parks(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream) as rig:
        rig.send(method="GET", headers={"X-HTTP-Method-Override": "POST"})
        await idle(rig)
    assert rig.transport.parked == []
    (reply,) = rig.replies()
    assert reply["status"] == 503 and flaky.upstream.hits == 1  # answered, neither parked nor retried
