"""Tables and the JSON result for the network benchmark."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.performance.bench_load import Trial, median_trial, spread
from tests.performance.bench_procs import REPO
from tests.performance.bench_scale import ScaleResult
from tests.performance.bench_targets import CMN, NAIVE, RAW_BROKER, RAW_HTTP, TARGETS

RESULTS = REPO / "benchmark-results"
# Issue 2's throughput targets: CMN at least this many times the naive gateway, per broker.
TARGET_RATIO = {"rabbitmq": 2.0, "kafka": 1.2}
LABELS = {
    RAW_HTTP: "raw HTTP (aiohttp direct)",
    RAW_BROKER: "raw broker (echo, no HTTP)",
    NAIVE: "naive gateway",
    CMN: "CMN gateway",
}


@dataclass
class BrokerResults:
    """Everything measured for one broker."""

    broker: str
    throughput: dict[str, list[Trial]] = field(default_factory=dict)
    latency: list[Trial] = field(default_factory=list)

    def median(self, target: str) -> Trial | None:
        trials = self.throughput.get(target)
        return median_trial(trials) if trials else None

    def ratios(self) -> dict[str, float]:
        cmn = self.median(CMN)
        out: dict[str, float] = {}
        for name, target in (("cmn/naive", NAIVE), ("cmn/raw_http", RAW_HTTP), ("cmn/raw_broker", RAW_BROKER)):
            other = self.median(target)
            if cmn is not None and other is not None and other.rps > 0:
                out[name] = cmn.rps / other.rps
        cmn_cpu, naive_cpu = self.cpu_us_per_req(CMN), self.cpu_us_per_req(NAIVE)
        if cmn_cpu and naive_cpu:
            out["cpu_per_req cmn/naive"] = cmn_cpu / naive_cpu
        return out

    def cpu_us_per_req(self, target: str) -> float | None:
        costs = sorted(t.cpu_us_per_req for t in self.throughput.get(target, []) if t.cpu_us_per_req is not None)
        return costs[len(costs) // 2] if costs else None

    def cpu_split(self, target: str) -> dict[str, float]:
        """Median over runs of each process's CPU per request (µs)."""
        per_name: dict[str, list[float]] = {}
        for trial in self.throughput.get(target, []):
            for name, cost in (trial.cpu_split or {}).items():
                per_name.setdefault(name, []).append(cost)
        return {name: sorted(costs)[len(costs) // 2] for name, costs in per_name.items()}

    def ceiling(self, cores: int) -> dict[str, float] | None:
        """What CMN could reach if its own process cost no CPU at all.

        The broker's work for the contract's messages, the upstream and the load generator still
        cost what they were measured to cost per CMN request; on a machine of ``cores`` saturated
        cores that bounds CMN's throughput, and with it the best CMN/naive ratio this machine allows.
        """
        split, naive = self.cpu_split(CMN), self.median(NAIVE)
        others = sum(cost for name, cost in split.items() if name != "service")
        if "service" not in split or others <= 0 or naive is None or naive.rps <= 0:
            return None
        rps = cores * 1e6 / others
        needed = TARGET_RATIO.get(self.broker, 1.0) * naive.rps
        return {
            "cores": cores,
            "others_us_per_req": others,
            "rps": rps,
            "cmn/naive": rps / naive.rps,
            "target_rps": needed,
            # The most CPU per request CMN's own process may spend for the target to be reachable.
            "budget_us_per_req_at_target": cores * 1e6 / needed - others,
        }

    def peak_rate(self, target: str, share: float) -> float | None:
        """``share`` of ``target``'s median closed-loop throughput, in whole requests per second."""
        peak = self.median(target)
        return None if peak is None else float(round(share * peak.rps))

    def rate_trials(self, target: str, rate: float) -> list[Trial]:
        """``target``'s trials at ``rate``, one per latency round, in round order."""
        return [t for t in self.latency if t.target == target and abs(t.load - rate) < 1e-6]

    def rate_p95_ms(self, target: str, rate: float) -> float | None:
        """Median over rounds of ``target``'s p95 at ``rate``."""
        trials = self.rate_trials(target, rate)
        return statistics.median(t.p95_ms for t in trials) if trials else None

    def added_p95_ms(self, rate: float, target: str = CMN, baseline: str = RAW_BROKER) -> float | None:
        """p95 of ``target`` minus p95 of ``baseline`` at the same fixed rate (what ``target`` adds): the
        difference within each latency round (the targets run one after another in a round), median over
        rounds, so a busy minute that slows both does not count as the gateway's. The default baseline is
        the raw broker round trip (issue 14's "gateway-added": what the gateway adds on top of the bus)."""
        pairs = zip(self.rate_trials(target, rate), self.rate_trials(baseline, rate), strict=False)
        added = [mine.p95_ms - base.p95_ms for mine, base in pairs]
        return statistics.median(added) if added else None

    def added_at(self, rate: float) -> dict[str, float | None]:
        return {
            "cmn-raw_broker": self.added_p95_ms(rate),
            "naive-raw_broker": self.added_p95_ms(rate, NAIVE),
            "cmn-raw_http": self.added_p95_ms(rate, CMN, RAW_HTTP),
            "naive-raw_http": self.added_p95_ms(rate, NAIVE, RAW_HTTP),
        }

    def as_dict(self, low_rate: float) -> dict[str, Any]:
        medians = {t: m.as_dict() for t in TARGETS if (m := self.median(t)) is not None}
        return {
            "broker": self.broker,
            "throughput_runs": {t: [x.as_dict() for x in runs] for t, runs in self.throughput.items()},
            "throughput_median": medians,
            "ratios": self.ratios(),
            "cpu_us_per_req_median": {t: self.cpu_us_per_req(t) for t in TARGETS},
            "cpu_split_us_per_req_median": {t: self.cpu_split(t) for t in TARGETS},
            "ceiling_if_cmn_cost_nothing": self.ceiling(os.cpu_count() or 1),
            "latency_fixed_rate": [t.as_dict() for t in self.latency],
            "gateway_added_p95_ms_at_low_rate": self.added_p95_ms(low_rate),
            "added_p95_ms_at_low_rate": self.added_at(low_rate),
        }


def throughput_table(results: BrokerResults) -> str:
    lines = [
        f"\n== {results.broker}: closed loop, {_concurrency(results)} concurrent requesters, "
        f"median of {_runs(results)} runs ==",
        f"{'target':<28} {'req/s':>8} {'min-max':>13} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'CPU us/req':>11} {'loadgen':>8}",
    ]
    for target in TARGETS:
        m = results.median(target)
        if m is None:
            continue
        low, high = spread(results.throughput[target])
        errors = sum(t.errors for t in results.throughput[target])
        lines.append(
            f"{LABELS[target]:<28} {m.rps:>8.0f} {f'{low:.0f}-{high:.0f}':>13} {m.p50_ms:>8.1f} {m.p95_ms:>8.1f} "
            f"{m.p99_ms:>8.1f} {errors:>7} {_cpu(results, target):>11} {_share(m):>8}"
        )
    lines += [f"ratio {name:<22} {value:.2f}x" for name, value in results.ratios().items()]
    lines.append(
        "(CPU us/req: the serving process only - the upstream for raw HTTP - median over runs; "
        "loadgen: the load generator's CPU in cores during the median run)"
    )
    return "\n".join(lines)


SPLIT = ("service", "broker", "upstream", "loadgen")


def cpu_split_table(results: BrokerResults) -> str:
    """Every process's CPU per request, and what that leaves CMN on this machine."""
    cores = os.cpu_count() or 1
    lines = [
        f"\n== {results.broker}: CPU per request by process (us, median over runs; {cores} cores) ==",
        f"{'target':<28} " + " ".join(f"{name:>9}" for name in SPLIT) + f" {'total':>9} {'cores busy':>11}",
    ]
    for target in TARGETS:
        split, m = results.cpu_split(target), results.median(target)
        if not split or m is None:
            continue
        total = sum(split.values())
        cells = " ".join(f"{split[name]:>9.0f}" if name in split else f"{'-':>9}" for name in SPLIT)
        lines.append(f"{LABELS[target]:<28} {cells} {total:>9.0f} {total * m.rps / 1e6:>11.2f}")
    ceiling = results.ceiling(cores)
    if ceiling is not None:
        echo = results.cpu_split(RAW_BROKER).get("service")
        lines += [
            f"if CMN's own process cost nothing, the other processes' {ceiling['others_us_per_req']:.0f} us per "
            f"request would still cap it at {ceiling['rps']:.0f} req/s on {cores} fully used cores: "
            f"at most {ceiling['cmn/naive']:.2f}x the naive gateway",
            f"the target ({TARGET_RATIO.get(results.broker, 1.0):.1f}x naive = {ceiling['target_rps']:.0f} req/s) "
            f"leaves CMN's process {ceiling['budget_us_per_req_at_target']:.0f} us per request at most; it spends "
            f"{results.cpu_split(CMN)['service']:.0f}"
            + (f", the echo service (no HTTP, no parsing) {echo:.0f}" if echo is not None else ""),
        ]
    return "\n".join(lines)


def latency_table(results: BrokerResults, low_rate: float) -> str:
    lines = [
        f"\n== {results.broker}: fixed arrival rate (latency from scheduled send) ==",
        f"{'target':<28} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}",
    ]
    for t in results.latency:
        lines.append(
            f"{LABELS[t.target]:<28} {t.load:>8.0f} {t.p50_ms:>8.1f} {t.p95_ms:>8.1f} {t.p99_ms:>8.1f} {t.errors:>7}"
        )
    added = results.added_p95_ms(low_rate)
    if added is not None:
        lines.append(
            f"gateway-added p95 at {low_rate:.0f} req/s: {added:.2f} ms (CMN p95 - raw broker p95 per round, median)"
        )
    others = {k: v for k, v in results.added_at(low_rate).items() if v is not None and k != "cmn-raw_broker"}
    if others:
        lines.append("  for context: " + ", ".join(f"{k} {v:.2f} ms" for k, v in others.items()))
    return "\n".join(lines)


def scale_medians(scale: list[ScaleResult]) -> dict[str, tuple[ScaleResult, float, float]]:
    """Per way, in first-seen order: the run with the median wall time, and the lowest and highest."""
    runs: dict[str, list[ScaleResult]] = {}
    for result in scale:
        runs.setdefault(result.target, []).append(result)
    out: dict[str, tuple[ScaleResult, float, float]] = {}
    for target, results in runs.items():
        ordered = sorted(results, key=lambda r: r.wall_s)
        out[target] = (ordered[len(ordered) // 2], ordered[0].wall_s, ordered[-1].wall_s)
    return out


def scale_ratios(scale: list[ScaleResult]) -> dict[str, float]:
    """Median wall time of each way over the direct client's median (issue 3's target: CMN <= 1.2)."""
    medians = scale_medians(scale)
    direct = next((m for target, (m, _, _) in medians.items() if target.startswith("raw HTTP")), None)
    if direct is None or direct.wall_s <= 0:
        return {}
    return {t: m.wall_s / direct.wall_s for t, (m, _, _) in medians.items() if m is not direct}


def scale_document(scale: list[ScaleResult]) -> dict[str, Any]:
    return {
        "runs": [r.as_dict() for r in scale],
        "median": {target: m.as_dict() for target, (m, _, _) in scale_medians(scale).items()},
        "wall_ratio_to_direct": scale_ratios(scale),
    }


def scale_table(scale: list[ScaleResult]) -> str:
    medians = scale_medians(scale)
    runs = max((sum(1 for r in scale if r.target == t) for t in medians), default=0)
    lines = [
        f"\n== 10,000 concurrent requests, upstream holds each 1 s (RabbitMQ), median of {runs} runs ==",
        f"{'target':<34} {'ok':>6} {'errors':>7} {'wall s':>7} {'min-max':>11} {'peak RSS MB':>12} {'CPU s':>6}",
    ]
    for target, (r, low, high) in medians.items():
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        cpu = f"{r.cpu_s:.1f}" if r.cpu_s is not None else "-"
        failed = sum(x.errors for x in scale if x.target == target)
        codes = f"  {r.error_codes}" if r.error_codes else ""
        spread = f"{low:.2f}-{high:.2f}"
        lines.append(f"{target:<34} {r.ok:>6} {failed:>7} {r.wall_s:>7.2f} {spread:>11} {rss:>12} {cpu:>6}{codes}")
    lines += [f"wall ratio {target} / direct: {ratio:.2f}x" for target, ratio in scale_ratios(scale).items()]
    lines.append(f"CPU seconds by process (median runs): {'':<21}" + " ".join(f"{name:>9}" for name in SPLIT))
    for target, (r, _, _) in medians.items():
        split = r.cpu_split or {}
        cells = " ".join(f"{split[name]:>9.1f}" if name in split else f"{'-':>9}" for name in SPLIT)
        lines.append(f"  {target:<56} {cells}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": os.getloadavg(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_bytes(orjson.dumps({**document, "machine": machine()}, option=orjson.OPT_INDENT_2))
    return path


def _cpu(results: BrokerResults, target: str) -> str:
    cost = results.cpu_us_per_req(target)
    return "-" if cost is None else f"{cost:.0f}"


def _share(trial: Trial) -> str:
    return "-" if trial.loadgen_cpu_share is None else f"{trial.loadgen_cpu_share:.2f}"


def _concurrency(results: BrokerResults) -> str:
    trials = next(iter(results.throughput.values()), [])
    return f"{trials[0].load:.0f}" if trials else "?"


def _runs(results: BrokerResults) -> int:
    return max((len(v) for v in results.throughput.values()), default=0)
