"""``cmn serve`` (of this or another checkout) that writes when each request reached each stage.

    CMN_STAMPS_FILE=/tmp/stamps.jsonl python -m tests.performance.bench_stamps [CHECKOUT_DIR]

A measuring tool for ``bench_latency`` (issue 14, latency at low load), not how CMN runs: before
``gateway.cli`` starts, the pipeline's stage methods are wrapped to note wall-clock times
(``time.time()``, comparable with the load generator's, same machine) per correlation id:

    arrive        Pipeline.handle entered (the transport handed the delivery over)
    up_start      Pipeline._execute entered (decoded, guarded, admitted)
    up_end        Pipeline._execute returned (the upstream answered)
    deliver       Pipeline._deliver entered (reply built)
    reply_ok      the reply's publish returned (broker-confirmed)
    delivered     Pipeline._deliver returned (reply and telemetry event confirmed)
    settled       Pipeline.handle returned (acked / offset settled)
    queued        RabbitMQ: the reply's frames were put on the connection's write queue (lean path)
    written       RabbitMQ: the socket write that carried them (after the coalescing writer's turns)

Besides, every collector pass (``gc`` start, pause, generation) and, with ``CMN_STAMPS_LAG=1``,
every event-loop stall: a task that asks to sleep 1 ms notes each wake-up more than 2 ms late
(``lag``: the loop was busy, or the process was not scheduled). Lines are JSON, written at exit
(``cmn serve`` exits on SIGTERM after draining).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

LAG_TICK = 0.001
LAG_REPORT = 0.002

_records: list[dict[str, Any]] = []


def _note(kind: str, cid: object, at: float) -> None:
    _records.append({"k": kind, "id": cid, "t": at})


def _wrap(owner: type, name: str, key: Callable[..., object], before: str | None, after: str | None) -> None:
    original: Callable[..., Coroutine[Any, Any, Any]] = getattr(owner, name)

    @functools.wraps(original)
    async def stamped(*args: Any, **kwargs: Any) -> Any:
        cid = key(*args, **kwargs)
        if before:
            _note(before, cid, time.time())
        result = await original(*args, **kwargs)
        if after:
            _note(after, cid, time.time())
        return result

    setattr(owner, name, stamped)


def _install_pipeline() -> None:
    from gateway.pipeline import Pipeline

    _wrap(Pipeline, "handle", lambda self, delivery: delivery.correlation_id, "arrive", "settled")
    _wrap(Pipeline, "_execute", lambda self, envelope, *a, **k: envelope.id, "up_start", "up_end")
    _wrap(Pipeline, "_deliver", lambda self, delivery, *a, **k: delivery.correlation_id, "deliver", "delivered")
    _wrap(Pipeline, "_publish_reply", lambda self, message, *a, **k: message.correlation_id, None, "reply_ok")


def _install_rabbit_writes() -> None:
    import asyncio as aio

    from gateway.bus.rabbitmq.aiormq_internals.wire import LeanPublisher

    waiting: dict[bytes, str] = {}
    try_publish = LeanPublisher.try_publish

    @functools.wraps(try_publish)
    def queued(self: Any, channel: Any, exchange: str, routing_key: str, body: bytes, props: Any, **kw: Any) -> Any:
        result = try_publish(self, channel, exchange, routing_key, body, props, **kw)
        cid = props.correlation_id
        if result is not None and cid and not exchange:  # a reply (telemetry goes to an exchange)
            _note("queued", cid, time.time())
            waiting[cid.encode()] = cid
        return result

    LeanPublisher.try_publish = queued  # type: ignore[method-assign]
    write = aio.StreamWriter.write

    def written(self: aio.StreamWriter, data: Any) -> None:
        if waiting:
            now = time.time()
            for raw in [raw for raw in waiting if raw in data]:
                _note("written", waiting.pop(raw), now)
        write(self, data)

    aio.StreamWriter.write = written  # type: ignore[method-assign]


def _install_gc() -> None:
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        now = time.time()
        if phase == "start":
            started[0] = now
        else:
            _records.append({"k": "gc", "t": started[0], "ms": (now - started[0]) * 1000, "gen": info["generation"]})

    gc.callbacks.append(callback)


async def _watch_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(LAG_TICK)
        late = loop.time() - asked - LAG_TICK
        if late > LAG_REPORT:
            _records.append({"k": "lag", "t": time.time() - late, "ms": late * 1000})


def _install_lag_watch() -> None:
    if not os.environ.get("CMN_STAMPS_LAG"):
        return  # its 1,000 wake-ups a second cost the gateway CPU of their own: only when asked
    from gateway import app

    original = getattr(app.Gateway, "serve_until", None)
    if original is None:
        return

    @functools.wraps(original)
    async def serve(self: Any, *args: Any, **kwargs: Any) -> Any:
        watcher = asyncio.create_task(_watch_lag())
        try:
            return await original(self, *args, **kwargs)
        finally:
            watcher.cancel()

    app.Gateway.serve_until = serve  # type: ignore[method-assign]


def _dump() -> None:
    path = os.environ.get("CMN_STAMPS_FILE")
    if not path:
        return
    with open(path, "w") as out:
        for record in _records:
            out.write(json.dumps(record) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] not in ("", "."):
        sys.path.insert(0, sys.argv[1])
    _install_pipeline()
    _install_rabbit_writes()
    _install_gc()
    _install_lag_watch()
    atexit.register(_dump)
    from gateway.cli import main as cmn

    sys.argv = ["cmn", "serve"]
    cmn()


if __name__ == "__main__":
    main()
