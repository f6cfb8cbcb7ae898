"""Latency against load (issue 14): every target offered the same fixed arrival rates.

    .venv/bin/python -m tests.performance.benchmark_network --curve [--broker rabbitmq] [--runs 3]

The rates come from closed-loop peaks measured first in the same run (median of ``runs``, naive and
CMN interleaved): 25, 50, 75 and 90 % of the naive gateway's peak, then the same shares of CMN's own.
Every target (raw HTTP, raw broker echo, naive gateway, CMN) is then offered every rate, open loop
(``bench_load.fixed_rate``: latency counts from the scheduled start, so queueing shows), one process
per target and round, the targets interleaved in each of ``runs`` rounds; each point is the median
p50 and p95 of its rounds. The table prints each target's p95 beside its ratio to the naive gateway
at that rate, and the plot (matplotlib, log latency axis) goes to ``docs/latency-vs-load-<broker>.png``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tests.performance.bench_load import Call, Trial, fixed_rate, median_trial
from tests.performance.bench_report import LABELS
from tests.performance.bench_targets import CMN, NAIVE, TARGETS, Knobs, started

SHARES = (0.25, 0.5, 0.75, 0.9)
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Run one closed-loop trial of a target: (broker, target, label, knobs) → Trial (benchmark_network's).
ClosedTrial = Callable[[str, str, str, Knobs], Awaitable[Trial]]


@dataclass(frozen=True, slots=True)
class CurvePlan:
    runs: int = 3
    seconds: float = 4.0  # measured window at each rate
    warmup: float = 1.0


@dataclass(frozen=True, slots=True)
class Rate:
    """One offered rate: ``share`` of the closed-loop peak of ``basis`` (naive or cmn)."""

    basis: str
    share: float
    rps: float

    @property
    def label(self) -> str:
        return f"{self.share:.0%} {self.basis}"


@dataclass(frozen=True, slots=True)
class CurvePoint:
    target: str
    rate: Rate
    p50_ms: float
    p95_ms: float
    errors: int
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": asdict(self.rate)}


def offered_rates(naive_peak: float, cmn_peak: float) -> list[Rate]:
    """The shares of the naive gateway's peak, then of CMN's; whole requests per second."""
    return [Rate(NAIVE, s, round(s * naive_peak)) for s in SHARES] + [Rate(CMN, s, round(s * cmn_peak)) for s in SHARES]


async def peaks(broker: str, knobs: Knobs, runs: int, closed_trial: ClosedTrial) -> dict[str, float]:
    """Closed-loop peak of the naive gateway and CMN: median of ``runs``, interleaved."""
    found: dict[str, list[Trial]] = {NAIVE: [], CMN: []}
    for run in range(runs):
        for target in found:
            trial = await closed_trial(broker, target, target, knobs)
            found[target].append(trial)
            print(f"[{broker} curve peak {run + 1}/{runs}] {target:<10} {trial.rps:8.0f} req/s", flush=True)
    return {target: median_trial(trials).rps for target, trials in found.items()}


async def sweep(broker: str, target: str, knobs: Knobs, rates: list[Rate], plan: CurvePlan) -> list[Trial]:
    """``target`` offered every rate in turn, lowest first (so a backlog left by an overload cannot spill
    into a lighter rate). RabbitMQ: one process for all rates. Kafka: a fresh target and Tansu broker per
    rate, since Tansu's memory store stalls once a partition holds a few thousand one-record batches
    (shared/TESTING.md), which the naive gateway's unbatched replies reach within one rate."""
    out: list[Trial] = []
    ordered = sorted(rates, key=lambda r: r.rps)
    if broker == "kafka":
        for rate in ordered:
            async with started(broker, target, knobs) as running:
                out.append(await _offer(broker, target, running.call, rate, plan))
        return out
    async with started(broker, target, knobs) as running:
        for rate in ordered:
            out.append(await _offer(broker, target, running.call, rate, plan))
    return out


async def _offer(broker: str, target: str, call: Call, rate: Rate, plan: CurvePlan) -> Trial:
    trial = await fixed_rate(target, call, rate=rate.rps, seconds=plan.seconds, warmup=plan.warmup)
    print(
        f"[{broker} curve] {target:<10} at {rate.rps:6.0f} req/s ({rate.label}): "
        f"p50 {trial.p50_ms:7.1f} ms p95 {trial.p95_ms:7.1f} ms errors {trial.errors}",
        flush=True,
    )
    return trial


async def measure_curve(
    broker: str,
    base: AbstractAsyncContextManager[Knobs],
    knobs_for: Callable[[Knobs], Knobs],
    closed_trial: ClosedTrial,
    plan: CurvePlan,
) -> tuple[dict[str, float], list[CurvePoint]]:
    """Peaks, then ``plan.runs`` interleaved rounds of every target at every rate; the median points."""
    async with base as upstream_knobs:
        knobs = knobs_for(upstream_knobs)
        peak = await peaks(broker, knobs, plan.runs, closed_trial)
        rates = offered_rates(peak[NAIVE], peak[CMN])
        seen: dict[tuple[str, float], list[Trial]] = {}
        for _ in range(plan.runs):
            for target in TARGETS:
                for trial in await sweep(broker, target, knobs, rates, plan):
                    seen.setdefault((target, trial.load), []).append(trial)
    pairs = ((target, rate) for rate in rates for target in TARGETS)
    points = [_point(target, rate, trials) for target, rate in pairs if (trials := seen.get((target, rate.rps)))]
    return peak, points


def _point(target: str, rate: Rate, trials: list[Trial]) -> CurvePoint:
    """Median p50/p95 of the rounds that answered anything (NaN when none did: the plot leaves a gap)."""
    answered = [t for t in trials if t.completed]
    p50 = statistics.median(t.p50_ms for t in answered) if answered else math.nan
    p95 = statistics.median(t.p95_ms for t in answered) if answered else math.nan
    return CurvePoint(target, rate, p50, p95, sum(t.errors for t in trials), len(trials))


def curve_table(broker: str, peak: dict[str, float], points: list[CurvePoint]) -> str:
    """p50 and p95 per target and rate; each p95 with its ratio to the naive gateway's at that rate."""
    naive_p95 = {p.rate: p.p95_ms for p in points if p.target == NAIVE}
    lines = [
        f"\n== {broker}: latency against load (closed-loop peak: naive {peak[NAIVE]:.0f} req/s, "
        f"CMN {peak[CMN]:.0f} req/s; medians of {points[0].runs if points else 0} runs) ==",
        f"{'rate':>14} {'target':<27} {'p50 ms':>8} {'p95 ms':>8} {'p95 vs naive':>13} {'errors':>7}",
    ]
    for point in sorted(points, key=lambda p: p.rate.rps):
        base = naive_p95.get(point.rate)
        ratio = f"{point.p95_ms / base:.2f}x" if base else "-"
        lines.append(
            f"{f'{point.rate.rps:.0f} ({point.rate.label})':>14} {LABELS.get(point.target, point.target):<27} "
            f"{point.p50_ms:>8.1f} {point.p95_ms:>8.1f} {ratio:>13} {point.errors:>7}"
        )
    return "\n".join(lines)


def markdown_table(points: list[CurvePoint]) -> str:
    """The table for docs/performance.md: one row per rate, p50 / p95 (ms) per target, and the p95's ratio
    to the naive gateway's at that rate."""
    rates = sorted(dict.fromkeys(p.rate for p in points), key=lambda r: r.rps)
    cell = {(p.target, p.rate): p for p in points}
    head = "| offered req/s | " + " | ".join(LABELS.get(t, t) for t in TARGETS) + " |"
    rows = [head, "|---|" + "---|" * len(TARGETS)]
    for rate in rates:
        cells = []
        naive = cell.get((NAIVE, rate))
        for target in TARGETS:
            p = cell.get((target, rate))
            ratio = f" ({p.p95_ms / naive.p95_ms:.2f}x)" if p and naive and naive.p95_ms and target != NAIVE else ""
            cells.append(f"{p.p50_ms:.1f} / {p.p95_ms:.1f}{ratio}" if p else "-")
        rows.append(f"| {rate.rps:.0f} ({rate.label}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(broker: str, peak: dict[str, float], points: list[CurvePoint], path: Path | None = None) -> Path:
    """p50 (dashed) and p95 (solid) against the offered rate, one colour per target."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    path = path or DOCS / f"latency-vs-load-{broker}.png"
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for target in TARGETS:
        mine = sorted((p for p in points if p.target == target), key=lambda p: p.rate.rps)
        if not mine:
            continue
        xs = [p.rate.rps for p in mine]
        (line,) = ax.plot(xs, [p.p95_ms for p in mine], marker="o", label=f"{LABELS.get(target, target)} p95")
        ax.plot(xs, [p.p50_ms for p in mine], marker=".", linestyle="--", color=line.get_color(), label=f"{target} p50")
    for target, style in ((NAIVE, ":"), (CMN, "-.")):
        ax.axvline(peak[target], color="grey", linestyle=style, linewidth=1)
        ax.annotate(
            f"{target} peak", (peak[target], 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right"
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"{broker}: latency against load (medians of {points[0].runs if points else 0} runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def points_from(document: dict[str, Any]) -> tuple[dict[str, float], list[CurvePoint]]:
    """The peaks and points of a ``document`` read back (to re-plot a stored run)."""
    points = [CurvePoint(**{**p, "rate": Rate(**p["rate"])}) for p in document["points"]]
    return document["peak_rps"], points


def document(peak: dict[str, float], points: list[CurvePoint], plan: CurvePlan) -> dict[str, Any]:
    return {"plan": asdict(plan), "peak_rps": peak, "points": [p.as_dict() for p in points]}


def knobs_with(concurrency: int) -> Callable[[Knobs], Knobs]:
    def apply(knobs: Knobs) -> Knobs:
        return replace(knobs, concurrency=concurrency, pool_size=concurrency)

    return apply
