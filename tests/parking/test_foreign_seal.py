"""Red team: a parked copy whose seal does not verify here (sealed by a replica with another PARK_SECRET,
or unset ones: each process draws its own; or forged) is served as a fresh publish. It used to park again
as well, from count 0 and, without ``sent_at``, with a fresh deadline: between two such replicas a request
to a down upstream went round the tiers for ever. Now it gets one try and its answer.
"""

from __future__ import annotations

import orjson

from gateway.access.identity import ANONYMOUS_CALLER, Signed
from gateway.parking import Sealer
from gateway.parking import ticket as park_headers
from tests.fixtures.upstreams import StartUpstream
from tests.parking.test_pipeline_parking import REPLIES, flaky_upstream, idle, running

OTHER_REPLICA = Sealer(b"another-replicas-own-park-secret-0123")


async def test_a_copy_sealed_by_another_secret_is_answered_not_parked_again(start_upstream: StartUpstream) -> None:
    flaky = await flaky_upstream(start_upstream)
    async with running(flaky.upstream, delays=(1,)) as rig:
        body = orjson.dumps({"id": "r1", "upstream": "flaky", "method": "GET", "path": "/", "timeout_ms": 60_000})
        rig.transport.send(body, reply_to=REPLIES, correlation_id="r1")  # a foreign client: no sent_at
        await idle(rig)
        for _ in range(3):  # the copy comes back to the other replica each time, which sealed it last
            assert len(rig.transport.parked) <= 1, "parked again: a loop across replicas"
            _, _, headers = rig.transport.parked[-1]
            proof = Signed(None, {}, "r1", REPLIES, body)
            resealed = OTHER_REPLICA.issue(
                proof, count=int(headers[park_headers.COUNT]), deadline_ms=int(headers[park_headers.DEADLINE]),
                attempts=int(headers[park_headers.ATTEMPTS]), caller=ANONYMOUS_CALLER,
            )  # fmt: skip
            rig.clock.advance(1.0)
            rig.transport.send(body, reply_to=REPLIES, correlation_id="r1", headers=resealed)
            await idle(rig)
            if rig.replies():
                break
    assert len(rig.transport.parked) == 1 and rig.parking.forged == 1
    (reply,) = rig.replies()
    assert reply["status"] == 503
