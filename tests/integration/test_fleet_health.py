"""Shared endpoint health over three real `cmn serve` processes, on RabbitMQ and on Kafka (Tansu), where
the replicas sign their verdicts (issue 11, section 4): a quorum
takes a dead endpoint out of a replica that never saw it fail, one replica alone failing to reach an
endpoint never takes it from the others, and a replica cut off from the broker falls back to its own
decisions, loudly."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.client import GatewayClient
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.rabbit import AMQP_URL
from tests.integration.fleet_health import Endpoint, Replica, drive, fleet_ready, start_fleet, until, upstreams_file
from tests.integration.harness import delete_rabbit_topology

TAKEN_OUT = "endpoint_taken_out_by_quorum"


@dataclass
class Fleet:
    replicas: list[Replica]
    good: Endpoint
    bad: Endpoint
    client: GatewayClient

    async def states(self, url: str) -> list[str | None]:
        return list(await asyncio.gather(*(r.breaker(url) for r in self.replicas)))


SECRET = "fleet-health-signing-secret"
SIGNED = {"keys": {"gw": {"principal": "gateways", "secret": {"env": "CMN_TEST_CONTROL_SECRET"}}}}


@pytest.fixture(params=["rabbitmq", "kafka"])
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    # A paused replica holds at most two requests; heartbeats every second, so peers are heard sooner.
    env = {"CMN_REQUESTS_QUEUE": queue, "MAX_IN_FLIGHT": "2", "SHARED_HEALTH_HEARTBEAT_MS": "1000"}
    if request.param == "rabbitmq":
        # The replicas' own AMQP user: the broker proves who published each verdict.
        return env | {"AMQP_URL": AMQP_URL, "CONTROL_PRINCIPALS": "guest"}
    # Kafka proves nothing: each replica signs its verdicts with the key CONTROL_KEY_ID names.
    return env | {
        "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"), "KAFKA_GROUP_ID": f"g.{queue}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000", "CONTROL_PRINCIPALS": "gateways", "CONTROL_KEY_ID": "gw",
        "CMN_TEST_CONTROL_SECRET": SECRET,
    }  # fmt: skip


@pytest.fixture
async def fleet(tmp_path: Path, broker_env: dict[str, str]) -> AsyncIterator[Fleet]:
    env, queue = broker_env, broker_env["CMN_REQUESTS_QUEUE"]
    rabbit = "AMQP_URL" in env
    security = None if rabbit else SIGNED
    good, bad = await Endpoint().start(), await Endpoint().start()
    breaker = {"window_size": 10, "minimum_calls": 4, "failure_rate_threshold": 50, "open_duration": 60}
    upstreams = upstreams_file(good.url, bad.url, breaker=breaker, outlier_detection={"enabled": False})
    replicas = await start_fleet(tmp_path, env, upstreams, security=security)
    try:
        for replica in replicas:
            assert replica.process.process is not None
            bad.replicas[replica.name] = replica.process.process.pid
        await fleet_ready(replicas)
        client = (
            GatewayClient.rabbitmq(AMQP_URL, queue=queue)
            if rabbit
            else GatewayClient.kafka(env["KAFKA_BOOTSTRAP_SERVERS"], topic=queue)
        )
        async with client:
            assert set(await drive(client, 12)) == {200}
            yield Fleet(replicas, good, bad, client)
    finally:
        for replica in replicas:
            if replica.process.process is not None and replica.process.process.returncode is None:
                replica.process.process.send_signal(signal.SIGCONT)
            await replica.process.aclose()
        await good.aclose()
        await bad.aclose()
        if rabbit:
            await delete_rabbit_topology(queue)


async def test_a_quorum_takes_the_dead_endpoint_out_of_a_replica_that_never_saw_it_fail(fleet: Fleet) -> None:
    first, second, third = fleet.replicas
    third_process = third.process.process
    assert third_process is not None
    third_process.send_signal(signal.SIGSTOP)  # the third replica sees none of what follows
    fleet.bad.turn()  # 503 for everyone
    traffic = asyncio.create_task(drive(fleet.client, 40, concurrency=8))  # two of them wait for the third

    async def two_tripped() -> bool:
        return [await r.breaker(fleet.bad.url) for r in (first, second)] == ["open", "open"]

    await until(two_tripped, 20.0, "the first two replicas open their breakers on their own")
    third_process.send_signal(signal.SIGCONT)

    async def third_out() -> bool:
        return await third.breaker(fleet.bad.url) == "open"

    await until(third_out, 10.0, "the third replica takes the endpoint out on the quorum's word")
    statuses = await asyncio.wait_for(traffic, 30.0)
    assert set(statuses) == {200}  # retries went to the good endpoint: callers saw nothing
    assert fleet.bad.hits_after[third.name] < 4  # below minimum_calls: it could not have tripped itself
    assert TAKEN_OUT in third.log and fleet.bad.url in third.log
    assert TAKEN_OUT not in first.log + second.log  # they decided by themselves
    assert await third.metric("cmn_shared_health_takeouts_total", upstream="payments") == 1.0
    shown = await third.endpoint(fleet.bad.url)
    assert shown is not None and shown["peers"] == {"votes": 2, "quorum": 2, "live": 3, "down": True}
    assert await fleet.states(fleet.good.url) == ["closed"] * 3  # never a healthy one


async def test_one_replica_alone_failing_never_takes_the_endpoint_from_the_others(fleet: Fleet) -> None:
    first, second, third = fleet.replicas
    fleet.bad.turn(sick={first.name})  # only the first replica's path to it is broken

    async def first_tripped() -> bool:
        await drive(fleet.client, 12, concurrency=3)
        return await first.breaker(fleet.bad.url) == "open"

    await until(first_tripped, 20.0, "the first replica opens its breaker on its own")
    await asyncio.sleep(1.0)  # its verdict went out on the change: time for the others to hear it
    before = dict(fleet.bad.hits_after)
    assert set(await drive(fleet.client, 30, concurrency=3)) == {200}
    assert await fleet.states(fleet.bad.url) == ["open", "closed", "closed"]
    for replica in (second, third):  # still sending the endpoint its share
        assert fleet.bad.hits_after[replica.name] > before.get(replica.name, 0)
    assert fleet.bad.hits_after[first.name] == before.get(first.name, 0)
    assert all(TAKEN_OUT not in r.log for r in fleet.replicas)
    assert await second.metric("cmn_shared_health_live_peers") == 2.0
    assert await second.metric("cmn_shared_health_degraded") == 0.0


async def test_a_replica_cut_off_from_the_control_channel_falls_back_to_local_decisions_loudly(
    tmp_path: Path,
) -> None:
    queue = f"t.requests.{uuid.uuid4().hex[:10]}"
    proxy = await TcpProxy("127.0.0.1", 5672).start()  # between this replica and RabbitMQ
    env = {
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        "CMN_REQUESTS_QUEUE": queue,
        "CONTROL_PRINCIPALS": "guest",
        "SHARED_HEALTH_HEARTBEAT_MS": "1000",  # silent after 3 s, not the default 15 s
    }
    good, other = await Endpoint().start(), await Endpoint().start()
    [replica] = await start_fleet(tmp_path, env, upstreams_file(good.url, other.url), count=1)

    async def degraded(value: float) -> bool:
        return await replica.metric("cmn_shared_health_degraded") == value

    try:

        async def serving() -> bool:
            return "cmn_serving" in replica.log  # started: its control channel is up

        await until(serving, 30.0, "the replica starts")
        assert await degraded(0.0)
        proxy.cut(block=True)
        # Within three 1 s heartbeats and some slack; at the default 5 s heartbeat this would take over 15 s.
        await until(lambda: degraded(1.0), 10.0, "the replica notices the silence")
        assert replica.log.count("shared_health_degraded") == 1  # once per transition, not per heartbeat
        proxy.resume()
        await until(lambda: degraded(0.0), 30.0, "the replica hears itself again")
        assert "shared_health_restored" in replica.log
    finally:
        await replica.process.aclose()
        await proxy.aclose()
        await good.aclose()
        await other.aclose()
        await delete_rabbit_topology(queue)
