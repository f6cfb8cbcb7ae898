"""CPU per request of the gateway process, CMN beside the naive gateway, and where it goes (issue 14).

    python -m tests.performance.bench_cpu --broker kafka --runs 3
    python -m tests.performance.bench_cpu --broker kafka --cmn before=/tmp/before --cmn after=. --runs 3
    python -m tests.performance.bench_cpu --broker kafka --profile benchmark-results/profile

Each run starts every way afresh (interleaved, so a noisy minute hits them alike) and loads it
closed-loop through the real SDK, as ``benchmark_network`` does, reading the serving process's CPU
from /proc over the measured window. The ways: ``naive`` (bench_naive as it is), ``naive-gc`` (the
same with ``cmn serve``'s collector tuning, bench_naive_tuned) and one CMN per ``--cmn LABEL=DIR``
(``cmn`` from this checkout by default). Prints the median CPU µs per request and its ratio to
``naive`` and to ``naive-gc``.

``--profile DIR`` instead records each way with ``py-spy record --format raw`` (sampling at 250 Hz,
non-blocking, so the target is not paused) over one window and writes the collapsed stacks to DIR;
``python -m tests.performance.bench_stages DIR/cmn.txt`` attributes them to stages. The CPU figures
of a profiled run are not reported (the sampler itself costs the target a little).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.performance.bench_load import Call, Trial, _cpu_between, closed_loop, cpu_probe, fixed_rate
from tests.performance.bench_procs import REPO, Child, quiet_collector, raise_fd_limit, run_loop_main
from tests.performance.bench_targets import CMN, NAIVE, Knobs, started

NAIVE_GC = "naive-gc"
TUNED_NAIVE = "tests.performance.bench_naive_tuned"


@dataclass(frozen=True, slots=True)
class Way:
    """One service under test: a label, the bench_targets target it is, and its knobs."""

    label: str
    target: str
    knobs: Knobs


@dataclass
class Results:
    cpu: dict[str, list[float]] = field(default_factory=dict)
    rps: dict[str, list[float]] = field(default_factory=dict)

    def median(self, label: str) -> float:
        return statistics.median(self.cpu[label])


def ways_for(knobs: Knobs, cmn: list[tuple[str, str]], naive_gc: bool, traced: bool = False) -> list[Way]:
    ways = [Way(NAIVE, NAIVE, knobs)]
    if naive_gc:
        ways.append(Way(NAIVE_GC, NAIVE, replace(knobs, naive_module=TUNED_NAIVE)))
    for label, source in cmn or [(CMN, "")]:
        resolved = str(Path(source).resolve()) if source else ""
        here = not resolved or resolved == str(REPO)
        way = Way(label, CMN, replace(knobs, cmn_source=None if here else resolved))
        ways.append(way)
        if traced:  # the same checkout tracing every request (bench_variant "tracing": OTLP/HTTP to a sink)
            ways.append(Way(f"{label}+tr", CMN, replace(way.knobs, cmn_variants=("tracing",))))
    return ways


async def at_rate(label: str, call: Call, pid: int, rate: float, seconds: float) -> Trial:
    """``fixed_rate`` (open loop) with the serving process's CPU over the measured window, per request
    offered in it: every way does the same work per second, so what a busy machine takes from one way
    shows up as latency, not as a lower rate that makes every request dearer (smaller batches)."""
    warmup = 1.0
    start = time.perf_counter() + warmup
    window = asyncio.create_task(_cpu_between(cpu_probe(pid), start, start + seconds))
    trial = await fixed_rate(label, call, rate=rate, seconds=seconds, warmup=warmup)
    cpu_seconds = await window
    assert cpu_seconds is not None
    return replace(trial, cpu_us_per_req=cpu_seconds / (rate * seconds) * 1e6)


async def measure(
    broker: str, ways: list[Way], runs: int, seconds: float, concurrency: int, rate: float | None = None
) -> Results:
    results = Results()
    for run in range(runs):
        for way in ways:
            async with started(broker, way.target, way.knobs) as running:
                pid = running.serving_pid
                assert pid is not None
                if rate is not None:
                    trial = await at_rate(way.label, running.call, pid, rate, seconds)
                else:
                    trial = await closed_loop(
                        way.label, running.call, concurrency=concurrency, seconds=seconds, cpu=cpu_probe(pid)
                    )
            assert trial.cpu_us_per_req is not None, f"{way.label}: nothing completed"
            results.cpu.setdefault(way.label, []).append(trial.cpu_us_per_req)
            results.rps.setdefault(way.label, []).append(trial.rps)
            print(
                f"[{broker} run {run + 1}/{runs}] {way.label:<10} {trial.rps:7.0f} req/s "
                f"{trial.cpu_us_per_req:7.0f} µs CPU/req  errors {trial.errors}  p95 {trial.p95_ms:.0f} ms",
                flush=True,
            )
    return results


def report(broker: str, results: Results) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    print(f"\n{broker}: CPU µs per request of the serving process (median of {len(results.cpu[NAIVE])} runs)")
    for label in results.cpu:
        row: dict[str, object] = {
            "broker": broker,
            "way": label,
            "cpu_us_per_req": round(results.median(label)),
            "runs": [round(v) for v in results.cpu[label]],
            "rps": round(statistics.median(results.rps[label])),
            "vs_naive": round(results.median(label) / results.median(NAIVE), 2),
        }
        if NAIVE_GC in results.cpu:
            row["vs_naive_gc"] = round(results.median(label) / results.median(NAIVE_GC), 2)
        rows.append(row)
        ratios = f"{row['vs_naive']:.2f}x naive" + (
            f", {row['vs_naive_gc']:.2f}x naive-gc" if "vs_naive_gc" in row else ""
        )
        print(f"  {label:<10} {row['cpu_us_per_req']:>6} µs  {row['rps']:>6} req/s  {ratios}  runs {row['runs']}")
        untraced = label.removesuffix("+tr")
        if untraced != label and untraced in results.cpu:
            row["traced_rps_ratio"] = round(
                statistics.median(results.rps[label]) / statistics.median(results.rps[untraced]), 2
            )
            row["tracing_adds_us"] = round(results.median(label) - results.median(untraced))
            # What the traced gateway's throughput would be, bound by its own CPU, against the untraced one.
            row["traced_cpu_ratio"] = round(results.median(untraced) / results.median(label), 2)
            print(
                f"  {'':<10} tracing: +{row['tracing_adds_us']} µs/req, untraced/traced CPU "
                f"{row['traced_cpu_ratio']:.2f}x, req/s {row['traced_rps_ratio']:.2f}x untraced"
            )
    return rows


async def profile(broker: str, ways: list[Way], seconds: float, concurrency: int, out: Path) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    for way in ways:
        async with started(broker, way.target, way.knobs) as running:
            pid = running.serving_pid
            assert pid is not None
            target = out / f"{broker}-{way.label}.txt"
            args = ["record", "-p", str(pid), "-r", "250", "--nonblocking", "--format", "raw"]
            args += ["-d", str(int(seconds)), "-o", str(target)]
            spy = await asyncio.create_subprocess_exec(py_spy, *args, stdout=asyncio.subprocess.DEVNULL)
            trial = await closed_loop(
                way.label, running.call, concurrency=concurrency, seconds=seconds + 1, warmup=0.5, cpu=cpu_probe(pid)
            )
            await spy.wait()
            print(f"[{broker} profile] {way.label:<10} {trial.rps:7.0f} req/s → {target}", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    async with Child("upstream", ["-m", "tests.performance.bench_upstream"]) as up:
        base = Knobs(f"http://127.0.0.1:{up.ready_line.split()[1]}", upstream_pid=up.pid)
        knobs = replace(base, concurrency=args.concurrency, pool_size=args.concurrency)
        cmn = [(label, source) for label, _, source in (item.partition("=") for item in args.cmn)]
        rows: list[dict[str, object]] = []
        for broker in args.broker or ["rabbitmq", "kafka"]:
            ways = ways_for(knobs, cmn, naive_gc=not args.no_naive_gc, traced=args.traced)
            if args.profile:
                await profile(broker, ways, args.seconds, args.concurrency, Path(args.profile))
                continue
            results = await measure(broker, ways, args.runs, args.seconds, args.concurrency, args.rate)
            rows += report(broker, results)
        if rows:
            out = REPO / "benchmark-results" / "cpu.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", action="append", choices=["rabbitmq", "kafka"], help="Repeatable; default both.")
    parser.add_argument("--cmn", action="append", default=[], help="LABEL=DIR: a CMN checkout to serve (repeatable).")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=256)  # as benchmark_network
    parser.add_argument("--no-naive-gc", action="store_true", help="Skip the naive gateway with CMN's GC tuning.")
    parser.add_argument(
        "--rate", type=float, help="Offer this many req/s to every way (open loop) instead of the closed loop."
    )
    parser.add_argument("--traced", action="store_true", help="Also each CMN tracing every request (LABEL+tr).")
    parser.add_argument("--profile", metavar="DIR", help="Record each way with py-spy instead of measuring.")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    quiet_collector()
    run_loop_main(main_async(args))


if __name__ == "__main__":
    main()
