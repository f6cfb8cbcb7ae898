"""Issue 14's target table: every target beside CMN's measured value, the naive gateway's and the verdict.

    .venv/bin/python -m tests.performance.benchmark_network            # measures everything, prints it last
    .venv/bin/python -m tests.performance.bench_scorecard [benchmark-results/network.json]   # prints it again

Built from what ``benchmark_network`` measured in one invocation, every figure a median of its runs
(each measurement's targets interleaved in every run, so a noisy minute hits them alike):

    CPU µs per request   the serving process's CPU over the closed-loop window, per completed request
                         (``BrokerResults.cpu_us_per_req``); the row's figure is CMN / naive.
    gateway-added p95    at a fixed arrival rate, a target's p95 minus the raw broker round trip's p95
                         (the echo service: same SDK, same broker, no HTTP) in the same round; the median
                         over rounds. What the gateway adds on top of the bus, whatever the bus costs
                         that minute. The RabbitMQ row's figure is CMN's minus the naive gateway's.
    p95 at 80 % of peak  CMN offered 80 % of its own closed-loop peak (median of the closed-loop runs),
                         open loop; the median p95 over rounds.
    10,000 in flight     wall time of 10,000 requests held 1 s by the upstream, median over runs, over
                         the direct aiohttp client's median (``bench_report.scale_ratios``).
    tracing              CMN with every request traced (spans exported over OTLP/HTTP to a sink in its own
                         process, ``bench_variant tracing``) over CMN as it ships: median req/s over median
                         req/s, closed loop.

The verdict reads the medians, as the issue states its targets; beside each ratio or difference the
table lists the same figure run by run (each run's pair measured in the same minute), so a reader can
see how far the machine's noise moved it. The verdict carries a caveat when the runs fall on both sides
of the target ("runs disagree"), and on the fixed-rate rows when that rate was at least 80 % of a
gateway's closed-loop peak in the same invocation ("overloaded": then the row measures queueing, not
what the gateway adds).

Nothing here measures: it only reads results, so it is checked with synthetic numbers
(tests/performance/test_scorecard.py).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.performance.bench_load import Trial, median_trial
from tests.performance.bench_report import RESULTS, BrokerResults, scale_medians, scale_ratios
from tests.performance.bench_scale import ScaleResult
from tests.performance.bench_targets import CMN, NAIVE, RAW_BROKER

# Issue 14's targets, written once: the table and its verdicts read them from here.
CPU_RATIO_MAX = {"rabbitmq": 0.6, "kafka": 1.0}
RABBIT_ADDED_OVER_NAIVE_MAX_MS = 1.0
KAFKA_ADDED_MAX_MS = 2.0
PEAK_SHARE_P95_BELOW_MS = 100.0
SCALE_WALL_RATIO_MAX = 1.2
TRACED_THROUGHPUT_MIN = 0.8
TRACED, UNTRACED = "cmn+tracing", "cmn"
# A fixed rate this close to a gateway's closed-loop peak (same invocation) measures its queue.
OVERLOAD_SHARE = 0.8
BROKER_NAMES = {"rabbitmq": "RabbitMQ", "kafka": "Kafka (Tansu)"}
MISSING = "not measured"


@dataclass(frozen=True, slots=True)
class Row:
    """One target: CMN's figure, the naive gateway's, the figure the target is about, and the verdict."""

    what: str
    cmn: str
    naive: str
    measure: str  # the ratio or difference the target is stated on
    target: str
    met: bool | None  # None: not measured in this invocation
    caveat: str = ""  # why this run's verdict is not evidence (the runs disagree, the rate overloaded a gateway)

    @property
    def verdict(self) -> str:
        verdict = MISSING if self.met is None else "yes" if self.met else "**no**"
        return f"{verdict} ({self.caveat})" if self.caveat else verdict

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass(frozen=True, slots=True)
class Measured:
    """Everything one ``benchmark_network`` invocation measured that the table reads."""

    brokers: Mapping[str, BrokerResults]
    tracing: Mapping[str, Mapping[str, Sequence[Trial]]]  # broker → {"cmn": runs, "cmn+tracing": runs}
    scale: Sequence[ScaleResult]
    low_rate: float
    peak_share: float


def rows(measured: Measured) -> list[Row]:
    rabbit, kafka = measured.brokers.get("rabbitmq"), measured.brokers.get("kafka")
    return [
        cpu_row("rabbitmq", rabbit),
        cpu_row("kafka", kafka),
        rabbit_added_row(rabbit, measured.low_rate),
        kafka_added_row(kafka, measured.low_rate),
        peak_share_row(rabbit, measured.peak_share),
        scale_row(measured.scale),
        *(tracing_row(broker, measured.tracing.get(broker)) for broker in ("rabbitmq", "kafka")),
    ]


def cpu_row(broker: str, results: BrokerResults | None) -> Row:
    limit = CPU_RATIO_MAX[broker]
    what = f"{BROKER_NAMES[broker]}: CPU µs per request (service process)"
    cmn = results.cpu_us_per_req(CMN) if results else None
    naive = results.cpu_us_per_req(NAIVE) if results else None
    if cmn is None or naive is None or naive <= 0:
        return _missing(what, f"≤ {limit:.1f}x")
    ratio = cmn / naive
    assert results is not None
    pairs = zip(_cpu_runs(results.throughput[CMN]), _cpu_runs(results.throughput[NAIVE]), strict=False)
    runs = [c / n for c, n in pairs if n > 0]
    caveat = _disagree(runs, lambda v: v <= limit)
    measure = _measure(ratio, runs, lambda v: v <= limit, places=2, unit="x")
    return Row(what, f"{cmn:,.0f}", f"{naive:,.0f}", measure, f"≤ {limit:.1f}x", ratio <= limit, caveat)


def rabbit_added_row(results: BrokerResults | None, rate: float) -> Row:
    what = f"RabbitMQ: gateway-added p95 at {rate:.0f} req/s (p95 - raw broker p95)"
    target = f"≤ naive + {RABBIT_ADDED_OVER_NAIVE_MAX_MS:.0f} ms"
    cmn = results.added_p95_ms(rate, CMN, RAW_BROKER) if results else None
    naive = results.added_p95_ms(rate, NAIVE, RAW_BROKER) if results else None
    if cmn is None or naive is None:
        return _missing(what, target)
    difference = cmn - naive
    assert results is not None
    pairs = zip(results.rate_trials(CMN, rate), results.rate_trials(NAIVE, rate), strict=False)
    runs = [mine.p95_ms - theirs.p95_ms for mine, theirs in pairs]

    def within(added: float) -> bool:
        return added <= RABBIT_ADDED_OVER_NAIVE_MAX_MS

    caveat = _overloaded(results, rate) or _disagree(runs, within)
    measure = _measure(difference, runs, within, places=1, unit=" ms", signed=True)
    return Row(what, _ms(cmn), _ms(naive), measure, target, within(difference), caveat)


def kafka_added_row(results: BrokerResults | None, rate: float) -> Row:
    what = f"Kafka (Tansu): p95 above the raw broker round trip at {rate:.0f} req/s"
    target = f"≤ {KAFKA_ADDED_MAX_MS:.0f} ms"
    cmn = results.added_p95_ms(rate, CMN, RAW_BROKER) if results else None
    naive = results.added_p95_ms(rate, NAIVE, RAW_BROKER) if results else None
    if cmn is None:
        return _missing(what, target)
    assert results is not None
    pairs = zip(results.rate_trials(CMN, rate), results.rate_trials(RAW_BROKER, rate), strict=False)
    runs = [mine.p95_ms - base.p95_ms for mine, base in pairs]
    caveat = _overloaded(results, rate) or _disagree(runs, lambda v: v <= KAFKA_ADDED_MAX_MS)
    measure = _measure(cmn, runs, lambda v: v <= KAFKA_ADDED_MAX_MS, places=1, unit=" ms")
    return Row(what, _ms(cmn), _ms(naive), measure, target, cmn <= KAFKA_ADDED_MAX_MS, caveat)


def peak_share_row(results: BrokerResults | None, share: float) -> Row:
    what = f"RabbitMQ: p95 at {share:.0%} of its own closed-loop peak"
    target = f"< {PEAK_SHARE_P95_BELOW_MS:.0f} ms (spec)"
    if results is None:
        return _missing(what, target)
    cells = {}
    for gateway in (CMN, NAIVE):
        rate = results.peak_rate(gateway, share)
        p95 = results.rate_p95_ms(gateway, rate) if rate is not None else None
        cells[gateway] = (rate, p95)
    rate, p95 = cells[CMN]
    if rate is None or p95 is None:
        return _missing(what, target)
    naive_rate, naive_p95 = cells[NAIVE]
    naive = f"{_ms(naive_p95)} at {naive_rate:,.0f} req/s" if naive_rate and naive_p95 is not None else MISSING
    runs = [t.p95_ms for t in results.rate_trials(CMN, rate)]
    caveat = _disagree(runs, lambda v: v < PEAK_SHARE_P95_BELOW_MS)
    passes = p95 < PEAK_SHARE_P95_BELOW_MS
    measure = _measure(p95, runs, lambda v: v < PEAK_SHARE_P95_BELOW_MS, places=1, unit=" ms", run_places=0)
    return Row(what, f"{_ms(p95)} at {rate:,.0f} req/s", naive, measure, target, passes, caveat)


def scale_row(scale: Sequence[ScaleResult]) -> Row:
    what = "10,000 in flight to a 1 s upstream: wall vs the direct aiohttp client"
    target = f"≤ {SCALE_WALL_RATIO_MAX:.1f}x"
    ratios, medians = scale_ratios(list(scale)), scale_medians(list(scale))
    cmn = _by_prefix(ratios, "CMN gateway")
    naive = _by_prefix(ratios, "naive")
    if cmn is None:
        return _missing(what, target)
    walls = {label: m.wall_s for label, (m, _, _) in medians.items()}
    cmn_cell = f"{cmn:.2f}x ({_by_prefix(walls, 'CMN gateway') or 0:.2f} s)"
    naive_cell = f"{naive:.2f}x ({_by_prefix(walls, 'naive') or 0:.2f} s)" if naive is not None else MISSING
    by_way: dict[str, list[float]] = {}
    for result in scale:
        by_way.setdefault(result.target, []).append(result.wall_s)
    direct = next((w for label, w in by_way.items() if label.startswith("raw HTTP")), [])
    mine = next((w for label, w in by_way.items() if label.startswith("CMN gateway")), [])
    runs = [c / d for c, d in zip(mine, direct, strict=False) if d > 0]
    caveat = _disagree(runs, lambda v: v <= SCALE_WALL_RATIO_MAX)
    measure = _measure(cmn, runs, lambda v: v <= SCALE_WALL_RATIO_MAX, places=2, unit="x")
    return Row(what, cmn_cell, naive_cell, measure, target, cmn <= SCALE_WALL_RATIO_MAX, caveat)


def tracing_row(broker: str, runs: Mapping[str, Sequence[Trial]] | None) -> Row:
    what = f"{BROKER_NAMES[broker]}: tracing every request, throughput traced / untraced"
    target = f"≥ {TRACED_THROUGHPUT_MIN:.1f}x"
    traced, untraced = (runs or {}).get(TRACED), (runs or {}).get(UNTRACED)
    if not traced or not untraced:
        return _missing(what, target)
    on, off = median_trial(list(traced)), median_trial(list(untraced))
    if off.rps <= 0:
        return _missing(what, target)
    ratio = on.rps / off.rps
    cmn = f"{on.rps:,.0f} / {off.rps:,.0f} req/s"
    cpu_on, cpu_off = _median_cpu(traced), _median_cpu(untraced)
    if cpu_on is not None and cpu_off is not None:
        cmn += f" (CPU {cpu_on:,.0f} / {cpu_off:,.0f} µs/req)"
    pairs = [t.rps / u.rps for t, u in zip(traced, untraced, strict=False) if u.rps > 0]
    caveat = _disagree(pairs, lambda v: v >= TRACED_THROUGHPUT_MIN)
    measure = _measure(ratio, pairs, lambda v: v >= TRACED_THROUGHPUT_MIN, places=2, unit="x")
    return Row(what, cmn, "—", measure, target, ratio >= TRACED_THROUGHPUT_MIN, caveat)


HEADER = ("target", "CMN", "naive", "ratio / difference (each run)", "target", "met")


def table(found: Sequence[Row], title: str = "") -> str:
    """A Markdown table padded to line up in a terminal (and pasted as is into docs/performance.md)."""
    cells = [HEADER, *((r.what, r.cmn, r.naive, r.measure, r.target, r.verdict) for r in found)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [f"\n== {title} ==" if title else ""]
    for i, row in enumerate(cells):
        lines.append("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    met = sum(1 for r in found if r.met)
    measured = sum(1 for r in found if r.met is not None)
    caveats = sum(1 for r in found if r.caveat)
    lines.append(
        f"{met} of {measured} measured targets met ({len(found) - measured} not measured; "
        f"{caveats} verdicts with a caveat)"
    )
    return "\n".join(lines)


def _missing(what: str, target: str) -> Row:
    return Row(what, MISSING, MISSING, "—", target, None)


def _ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f} ms"


def _by_prefix(values: Mapping[str, float], prefix: str) -> float | None:
    return next((v for k, v in values.items() if k.startswith(prefix)), None)


def _measure(
    value: float,
    runs: Sequence[float],
    passes: Callable[[float], bool],
    *,
    places: int,
    unit: str,
    signed: bool = False,
    run_places: int | None = None,
) -> str:
    """The figure the target is stated on, then run by run in run order: ``0.61x (0.61, 0.55, 0.58)``
    (no list for fewer than two runs)."""
    each = [_shown(v, passes, run_places if run_places is not None else places, signed) for v in runs]
    listed = " (" + ", ".join(each) + ")" if len(each) > 1 else ""
    return f"{_shown(value, passes, places, signed)}{unit}{listed}"


def _shown(value: float, passes: Callable[[float], bool], places: int, signed: bool = False) -> str:
    """``value`` to ``places`` decimals, or as many more as it takes for the text to get the verdict the
    value gets: 0.795 against ≥ 0.8x is "0.795", not "0.80", which would read as met beside a "no"."""
    text = ""
    for extra in range(4):
        text = f"{value:{'+' if signed else ''}.{places + extra}f}"
        if passes(float(text)) == passes(value):
            break
    return text


def _disagree(runs: Sequence[float], passes: Callable[[float], bool]) -> str:
    """ "runs disagree" when some runs meet the target and others miss it."""
    verdicts = {passes(v) for v in runs}
    return "runs disagree" if len(verdicts) > 1 else ""


def _overloaded(results: BrokerResults, rate: float) -> str:
    """A fixed rate at or above 80 % of a gateway's closed-loop peak measures its queue, not its latency."""
    for gateway in (NAIVE, CMN):
        peak = results.median(gateway)
        if peak is not None and rate >= OVERLOAD_SHARE * peak.rps:
            return f"overloaded: {rate:.0f} req/s vs {gateway} peak {peak.rps:.0f}"
    return ""


def _cpu_runs(trials: Sequence[Trial]) -> list[float]:
    return [t.cpu_us_per_req for t in trials if t.cpu_us_per_req is not None]


def _median_cpu(trials: Sequence[Trial]) -> float | None:
    costs = [t.cpu_us_per_req for t in trials if t.cpu_us_per_req is not None]
    return statistics.median(costs) if costs else None


def from_document(document: Mapping[str, Any]) -> Measured:
    """What a stored ``network.json`` holds, read back (the sections benchmark_network wrote)."""
    brokers: dict[str, BrokerResults] = {}
    for broker in ("rabbitmq", "kafka"):
        if (section := document.get(broker)) is None:
            continue
        results = brokers[broker] = BrokerResults(broker)
        for target, runs in section["throughput_runs"].items():
            results.throughput[target] = [Trial(**run) for run in runs]
        results.latency = [Trial(**trial) for trial in section["latency_fixed_rate"]]
    tracing = {
        broker: {label: [Trial(**t) for t in runs] for label, runs in section.items()}
        for broker in ("rabbitmq", "kafka")
        if (section := document.get(f"tracing_{broker}")) is not None
    }
    scale = [ScaleResult(**run) for run in document.get("scale_10k", {}).get("runs", [])]
    plan = document.get("plan", {})
    return Measured(brokers, tracing, scale, plan.get("low_rate", 200.0), plan.get("peak_share", 0.8))


def main() -> None:
    parser = argparse.ArgumentParser(description="Print issue 14's target table from a stored network.json.")
    parser.add_argument("path", nargs="?", type=Path, default=RESULTS / "network.json")
    args = parser.parse_args()
    document = orjson.loads(args.path.read_bytes())
    load = document.get("machine", {}).get("loadavg_at_end")
    title = f"issue 14 targets from {args.path}" + (f"; load average at the end {load}" if load else "")
    print(table(rows(from_document(document)), title))


if __name__ == "__main__":
    main()
