"""Latency at low load, stage by stage (issue 14): where a request waits, not what it costs.

    python -m tests.performance.bench_latency --broker rabbitmq --broker kafka --rate 50 --rate 200 \
        --runs 3 --cmn before=/tmp/lat-before --cmn after=.

For each broker, run and rate, every way is started afresh and offered the rate open loop through
the real SDK (``GatewayClient.send_raw``, as ``benchmark_network`` does), ways interleaved: the raw
broker echo, the naive gateway, and one CMN per ``--cmn LABEL=DIR`` (``bench_stamps``: CMN notes
when each request reached each stage). The requester is wrapped to note when its send returned
(RabbitMQ: the request's publisher confirm; Kafka: its acks=all produce) and when the reply
arrived. Latency counts from the scheduled start (no coordinated omission).

Printed per way and rate: the medians over runs of p50 and p95, and per stage the p50/p95 of all
requests of all runs (ms). Stages (CMN only for the server-side ones; wall clocks, one machine):

    to_gw       send → CMN's handler starts (publish, broker, consume)
    pre_up      handler start → upstream call starts (decode, guard, admission)
    upstream    the HTTP exchange
    build       upstream answered → reply built (encode, events)
    reply_out   reply built → reply arrived at the client (publish, broker, SDK consume)
    confirm     send → the requester's send returned (confirm / acks)
    gw_settle   reply built → reply and telemetry confirmed and the delivery settled
    reply_wait  send → reply arrived (what the client waits for besides the confirm)
    to_queue    RabbitMQ: reply built → its frames queued for the socket (telemetry, observers first)
    coalesce    RabbitMQ: queued → written to the socket (the coalescing writer's loop turns)
    wire        RabbitMQ: written → arrived at the client (broker, SDK's consumer)
    held        reply arrived → the send's confirm returned, when later (0 otherwise): time a client
                that awaits its confirm before its reply spends holding a reply it already has
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from gateway.bus.base import ReplyCallback, ReplyMessage
from gateway.bus.embedded import EmbeddedBroker
from gateway.client import GatewayClient
from gateway.clock import SystemClock
from tests.performance.bench_load import (
    UPSTREAM,
    cpu_probe,
    echo_envelope,
    first_reply,
    kafka_client,
    percentile,
    rabbit_client,
)
from tests.performance.bench_procs import Child, quiet_collector, raise_fd_limit, run_loop_main
from tests.performance.bench_targets import (
    CMN,
    NAIVE,
    RAW_BROKER,
    Knobs,
    child_env,
    delete_queues,
    kafka_env,
    rabbit_env,
    service_child,
)

CALL_TIMEOUT = 15.0


@dataclass
class _Call:
    """One request by number: ``full`` gives (correlation id, ok); calling it gives ok."""

    full: Any

    async def __call__(self, i: int) -> bool:
        return bool((await self.full(i))[1])


class StampingRequester:
    """Delegates to a real requester; notes when each send returned and each reply arrived."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent: dict[str, float] = {}
        self.confirmed: dict[str, float] = {}
        self.replied: dict[str, float] = {}

    @property
    def name(self) -> str:
        return str(self._inner.name)

    @property
    def destination(self) -> str:
        return str(self._inner.destination)

    @property
    def reply_address(self) -> str | None:
        return self._inner.reply_address  # type: ignore[no-any-return]

    async def start(self, on_reply: ReplyCallback) -> None:
        def stamped(reply: ReplyMessage) -> None:
            if reply.correlation_id:
                self.replied[reply.correlation_id] = time.time()
            on_reply(reply)

        await self._inner.start(stamped)

    async def send(self, body: bytes, *, content_type: str, correlation_id: str, headers: Mapping[str, str]) -> None:
        self.sent[correlation_id] = time.time()
        await self._inner.send(body, content_type=content_type, correlation_id=correlation_id, headers=headers)
        self.confirmed[correlation_id] = time.time()

    def telemetry(self, *, from_beginning: bool = False) -> Any:
        return self._inner.telemetry(from_beginning=from_beginning)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Sample:
    """One request's client-side times (wall clock) and its latency from the scheduled start (s)."""

    cid: str
    latency: float


@dataclass
class Outcome:
    label: str
    rate: float
    p50: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    gc_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the serving process's CPU per request, per run


def cmn_child(source: str, where: str, broker: str, knobs: Knobs, workdir: Path, stamps: Path) -> Child:
    import yaml

    upstreams = workdir / "upstreams.yaml"
    upstreams.write_text(yaml.safe_dump({"upstreams": {UPSTREAM: {"endpoints": [knobs.upstream_url]}}}))
    if broker == "rabbitmq":
        env = rabbit_env(where, knobs)
    else:
        bootstrap, topic = where.split("|")
        env = kafka_env(bootstrap, topic, knobs)
    base = {
        "CMN_UPSTREAMS_FILE": str(upstreams),
        "ENABLE_METRICS": "false",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "CMN_STAMPS_FILE": str(stamps),
    }
    args = ["-m", "tests.performance.bench_stamps", str(Path(source).resolve())]
    return Child("cmn serve (stamped)", args, env=child_env({**base, **env}), ready="cmn_serving")


@dataclass
class Started:
    client: GatewayClient
    stamps: StampingRequester
    stamps_file: Path | None
    pid: int
    server: dict[str, dict[str, float]] = field(default_factory=dict)
    other: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def started(broker: str, target: str, source: str, knobs: Knobs) -> AsyncIterator[Started]:
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cmn-lat-")))
        name = f"bench.lat.{target}.{uuid.uuid4().hex[:10]}"
        if broker == "rabbitmq":
            stack.push_async_callback(delete_queues, name, f"{name}.dlq")
            where = name
            inner: Any = rabbit_client(name)._requester
        else:
            tansu = await stack.enter_async_context(
                EmbeddedBroker(port=0, log_file=workdir / "tansu.log", clock=SystemClock())
            )
            where = f"{tansu.bootstrap}|{name}"
            inner = kafka_client(tansu.bootstrap, name)._requester
        stamps_file = workdir / "stamps.jsonl" if target == CMN else None
        if stamps_file is not None:
            process = cmn_child(source, where, broker, knobs, workdir, stamps_file)
        else:
            process = service_child(broker, target, where, knobs, workdir)
        stamping = StampingRequester(inner)
        client = GatewayClient(stamping, clock=SystemClock())  # type: ignore[arg-type]
        child = await stack.enter_async_context(process)
        await stack.enter_async_context(client)
        await first_reply(call_for(client))
        running = Started(client, stamping, stamps_file, child.pid)
        yield running
        await client.aclose()
        await child.aclose()  # cmn serve writes its stamps on the way out
        running.server, running.other = read_stamps(stamps_file)


def call_for(client: GatewayClient) -> _Call:
    prefix = uuid.uuid4().hex[:12]

    async def call(i: int) -> tuple[str, bool]:
        rid = f"{prefix}-{i}"
        try:
            reply = await client.send_raw(echo_envelope(rid, CALL_TIMEOUT), correlation_id=rid, timeout=CALL_TIMEOUT)
        except TimeoutError:
            return rid, False
        return rid, orjson.loads(reply.body).get("error") is None

    return _Call(call)


async def open_loop(call: _Call, rate: float, seconds: float, warmup: float) -> tuple[list[Sample], int]:
    samples: list[Sample] = []
    errors = 0
    origin = time.perf_counter()
    total = int(rate * (warmup + seconds))
    measured_from = int(rate * warmup)

    async def one(k: int, scheduled: float) -> None:
        nonlocal errors
        rid, ok = await call.full(k)
        if k >= measured_from:
            if ok:
                samples.append(Sample(rid, time.perf_counter() - scheduled))
            else:
                errors += 1

    tasks = []
    k = 0
    while k < total:
        now = time.perf_counter()
        while k < total and origin + k / rate <= now:
            tasks.append(asyncio.create_task(one(k, origin + k / rate)))
            k += 1
        await asyncio.sleep(max(0.0, origin + k / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    return samples, errors


def read_stamps(path: Path | None) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    per: dict[str, dict[str, float]] = {}
    other: list[dict[str, Any]] = []
    if path is None or not path.exists():
        return per, other
    for line in path.read_text().splitlines():
        record = orjson.loads(line)
        if record["k"] in ("gc", "lag"):
            other.append(record)
        elif record.get("id"):
            per.setdefault(record["id"], {}).setdefault(record["k"], record["t"])
    return per, other


def stages_of(
    samples: list[Sample], stamping: StampingRequester, server: dict[str, dict[str, float]]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def add(name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None:
            out.setdefault(name, []).append((end - start) * 1000)

    for sample in samples:
        cid = sample.cid
        sent, confirmed, replied = stamping.sent.get(cid), stamping.confirmed.get(cid), stamping.replied.get(cid)
        add("confirm", sent, confirmed)
        add("reply_wait", sent, replied)
        if confirmed is not None and replied is not None:
            # How long the client held a reply it had, waiting for its own request's confirm.
            out.setdefault("held", []).append(max(0.0, confirmed - replied) * 1000)
        s = server.get(cid, {})
        add("to_gw", sent, s.get("arrive"))
        add("pre_up", s.get("arrive"), s.get("up_start"))
        add("upstream", s.get("up_start"), s.get("up_end"))
        add("build", s.get("up_end"), s.get("deliver"))
        add("reply_out", s.get("deliver"), replied)
        add("gw_settle", s.get("deliver"), s.get("settled"))
        add("reply_ok", s.get("deliver"), s.get("reply_ok"))
        add("to_queue", s.get("deliver"), s.get("queued"))
        add("coalesce", s.get("queued"), s.get("written"))
        add("wire", s.get("written"), replied)
    return out


async def trial(broker: str, label: str, target: str, source: str, knobs: Knobs, rate: float, plan: Any) -> Outcome:
    outcome = Outcome(label, rate)
    async with started(broker, target, source, knobs) as running:
        cpu = cpu_probe(running.pid)
        before = cpu()
        samples, errors = await open_loop(call_for(running.client), rate, plan.seconds, plan.warmup)
        outcome.cpu_us.append((cpu() - before) / (rate * (plan.seconds + plan.warmup)) * 1e6)
    stamping, server, other = running.stamps, running.server, running.other
    lat = sorted(s.latency * 1000 for s in samples)
    outcome.p50.append(percentile(lat, 50))
    outcome.p95.append(percentile(lat, 95))
    outcome.errors += errors
    outcome.stages = stages_of(samples, stamping, server)
    # Only what happened while the measured requests were under way (not start-up, not shutdown).
    sent = [stamping.sent[s.cid] for s in samples if s.cid in stamping.sent]
    start, end = (min(sent), max(sent) + 1.0) if sent else (0.0, 0.0)
    during = [r for r in other if start <= r["t"] <= end]
    outcome.gc_ms = [r["ms"] for r in during if r["k"] == "gc"]
    outcome.lag_ms = [r["ms"] for r in during if r["k"] == "lag"]
    return outcome


def merge(into: dict[tuple[str, float], Outcome], found: Outcome) -> None:
    key = (found.label, found.rate)
    held = into.get(key)
    if held is None:
        into[key] = found
        return
    held.p50 += found.p50
    held.p95 += found.p95
    held.errors += found.errors
    for name, values in found.stages.items():
        held.stages.setdefault(name, []).extend(values)
    held.gc_ms += found.gc_ms
    held.lag_ms += found.lag_ms
    held.cpu_us += found.cpu_us


def report(broker: str, results: dict[tuple[str, float], Outcome]) -> list[dict[str, Any]]:
    rows = []
    print(f"\n== {broker}: latency (ms) from the scheduled start, median of runs; stages p50/p95 over all requests ==")
    for (label, rate), o in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        stages = {name: (percentile(sorted(v), 50), percentile(sorted(v), 95)) for name, v in sorted(o.stages.items())}
        text = "  ".join(f"{n} {a:.2f}/{b:.2f}" for n, (a, b) in stages.items())
        gc_note = f" gc {len(o.gc_ms)}x max {max(o.gc_ms):.1f}" if o.gc_ms else ""
        lag_note = f" lag>2ms {len(o.lag_ms)}x max {max(o.lag_ms):.1f}" if o.lag_ms else ""
        print(
            f"{label:<10} {rate:5.0f}/s p50 {statistics.median(o.p50):6.2f} p95 {statistics.median(o.p95):6.2f} "
            f"runs p50 {[round(v, 1) for v in o.p50]} p95 {[round(v, 1) for v in o.p95]} err {o.errors}"
            f" CPU {statistics.median(o.cpu_us):.0f} us/req"
            f"{gc_note}{lag_note}\n           {text}",
            flush=True,
        )
        rows.append(
            {
                "broker": broker,
                "way": label,
                "rate": rate,
                "p50_ms": round(statistics.median(o.p50), 2),
                "p95_ms": round(statistics.median(o.p95), 2),
                "runs_p50": [round(v, 2) for v in o.p50],
                "runs_p95": [round(v, 2) for v in o.p95],
                "stages": {k: [round(a, 2), round(b, 2)] for k, (a, b) in stages.items()},
                "gc_pauses_ms": [round(v, 1) for v in o.gc_ms],
                "loop_lags_ms": [round(v, 1) for v in o.lag_ms],
                "errors": o.errors,
                "cpu_us_per_req": round(statistics.median(o.cpu_us)),
                "runs_cpu_us": [round(v) for v in o.cpu_us],
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class Plan:
    seconds: float = 5.0
    warmup: float = 1.0


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    plan = Plan(seconds=args.seconds)
    async with Child("upstream", ["-m", "tests.performance.bench_upstream"]) as up:
        knobs = Knobs(f"http://127.0.0.1:{up.ready_line.split()[1]}", upstream_pid=up.pid)
        knobs = replace(knobs, concurrency=256, pool_size=256)
        cmn = [(label, source or ".") for label, _, source in (item.partition("=") for item in args.cmn)]
        ways = [(w, w, "") for w in args.way] + [(label, CMN, source) for label, source in cmn or [("cmn", ".")]]
        rows: list[dict[str, Any]] = []
        for broker in args.broker or ["rabbitmq", "kafka"]:
            results: dict[tuple[str, float], Outcome] = {}
            for run in range(args.runs):
                for rate in args.rate or [50.0, 200.0]:
                    for label, target, source in ways:
                        found = await trial(broker, label, target, source, knobs, rate, plan)
                        print(
                            f"[{broker} run {run + 1}/{args.runs}] {label:<10} {rate:5.0f}/s "
                            f"p50 {found.p50[0]:6.2f} p95 {found.p95[0]:6.2f} errors {found.errors} "
                            f"CPU {found.cpu_us[0]:5.0f} us/req",
                            flush=True,
                        )
                        merge(results, found)
            rows += report(broker, results)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", action="append", choices=["rabbitmq", "kafka"])
    parser.add_argument("--rate", action="append", type=float)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cmn", action="append", default=[], help="LABEL=DIR: a CMN checkout to serve, stamped.")
    parser.add_argument(
        "--way", action="append", default=[], choices=[RAW_BROKER, NAIVE], help="Other targets (default both)."
    )
    parser.add_argument("--out", default="benchmark-results/latency.json")
    args = parser.parse_args()
    args.way = args.way or [RAW_BROKER, NAIVE]
    raise_fd_limit()
    quiet_collector()
    rows = run_loop_main(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
