"""`cmn dlq replay` on a Kafka broker shared by two deployments (different CMN_REQUESTS_QUEUE, one
cmn.requests.dlq topic): each deployment's replay sends back only its own letters, to its own
requests topic; the other deployment's stay until it replays them. Real `cmn serve` processes."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from gateway.bus.base import ReplyMessage
from gateway.bus.embedded import EmbeddedBroker
from gateway.bus.kafka.requester import KafkaRequester
from gateway.clock import SystemClock
from tests.dlq.test_replay import cmn, counting_upstream, envelope, listed
from tests.fixtures.rabbit import wait_until
from tests.fixtures.upstreams import StartUpstream
from tests.integration.process import ServeProcess


async def serve(tmp: Path, name: str, env: dict[str, str], upstreams: dict[str, Any]) -> ServeProcess:
    directory = tmp / f"{name}-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    process = ServeProcess(directory, upstreams, {**env, "CMN_INSTANCE": name})
    await process.start()
    return process


async def test_each_deployment_replays_only_its_own_letters_to_its_own_topic(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    hits: Counter[str] = Counter()
    upstream = await start_upstream(counting_upstream(hits))
    replies: dict[str, list[int | None]] = {}

    def on_reply(message: ReplyMessage) -> None:
        replies.setdefault(message.correlation_id or "", []).append(orjson.loads(message.body).get("status"))

    async with EmbeddedBroker(port=0, clock=SystemClock()) as broker:
        tag = uuid.uuid4().hex[:6]
        envs = {
            name: {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "CMN_REQUESTS_QUEUE": f"{name}.requests.{tag}",
                "KAFKA_GROUP_ID": f"{name}.{tag}",
                "KAFKA_SESSION_TIMEOUT_MS": "1000",
            }
            for name in ("alpha", "beta")
        }
        requesters = {
            name: KafkaRequester(broker.bootstrap, topic=env["CMN_REQUESTS_QUEUE"], clock=SystemClock())
            for name, env in envs.items()
        }
        processes: list[ServeProcess] = []
        try:
            for requester in requesters.values():
                await requester.start(on_reply)
            # Both deployments know no `payments` yet: each request is dead-lettered (unknown_upstream).
            broken = {"other": {"endpoints": [upstream.url]}}
            processes += [await serve(tmp_path, name, env, broken) for name, env in envs.items()]
            for name, requester in requesters.items():
                body = envelope(f"r-{name}", "GET", f"/{name}")
                await requester.send(body, content_type="application/json", correlation_id=f"c-{name}", headers={})
            await wait_until(lambda: {"c-alpha", "c-beta"} <= set(replies), within=60)
            for process in processes:  # SIGTERM: drained, offsets committed, nothing comes again
                process.terminate()
                assert await process.wait() == 0

            # The fix: both deployments now know payments.
            fixed = {"payments": {"endpoints": [upstream.url]}}
            processes += [await serve(tmp_path, name, env, fixed) for name, env in envs.items()]
            rows = await listed(envs["alpha"])
            assert sorted(row["id"] for row in rows) == ["r-alpha", "r-beta"]  # one topic holds both

            code, out, err = await cmn("replay", env=envs["alpha"])
            assert code == 0 and out.startswith("replayed 1,"), out + err
            assert "left 1 of other deployments" in out
            await wait_until(lambda: len(replies["c-alpha"]) == 2, within=30)
            assert replies["c-alpha"] == [None, 200] and hits == Counter({"GET /alpha": 1})
            assert [row["id"] for row in await listed(envs["beta"])] == ["r-beta"]  # kept, not lost

            code, out, err = await cmn("replay", env=envs["beta"])
            assert code == 0 and out.startswith("replayed 1,"), out + err
            await wait_until(lambda: len(replies["c-beta"]) == 2, within=30)
            assert replies["c-beta"] == [None, 200]
            assert await listed(envs["alpha"]) == []
            await asyncio.sleep(0.5)  # a letter sent to the wrong topic or twice would be answered by now
            assert hits == Counter({"GET /alpha": 1, "GET /beta": 1})
            assert replies == {"c-alpha": [None, 200], "c-beta": [None, 200]}
        finally:
            for process in processes:
                await process.aclose()
            for requester in requesters.values():
                await requester.aclose()
