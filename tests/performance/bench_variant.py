"""``cmn serve`` with one experimental change, to measure what a suspected hot spot costs.

    python -m tests.performance.bench_variant VARIANT [VARIANT ...]

Nothing here is how CMN runs: these are what-if measurements for the profile report, each named
for what it changes. The gateway code itself is untouched; the change is applied in this process
before ``gateway.cli`` starts.

    gc-stats        unchanged, but reports the collector's pauses by generation and the cyclic garbage it freed
    gc-tuned        the thresholds ``cmn serve`` used before: (50,000, 20, 20)
    gc-off          no cyclic collection at all once serving: the bound of what collector tuning can buy
    no-gc-hold      the collector never held off during bursts of in-flight requests (gateway.gc_governor)
    gc-50k-wide, gc-200k-wide, gc-500k-wide, gc-1m-wide
                    young-generation threshold of that many allocations, older generations after 100 each
    no-telemetry    request telemetry events are observed but never published (nor confirmed)
    object-census   unchanged, but prints the tracked objects by type whenever their number peaks
    tracemalloc     unchanged, but prints the top allocation sites whenever traced memory reaches a new peak
    metrics         ENABLE_METRICS=true (Prometheus registry + /metrics server, scraped every 100 ms)
    tracing         OTLP_ENDPOINT set: spans for every request and attempt, exported over OTLP/HTTP to a
                    sink in a separate process (so receiving costs the gateway nothing)
    before          the gateway package from the checkout at CMN_BENCH_GATEWAY_SOURCE (a directory holding
                    ``gateway/``, e.g. ``git archive <commit> gateway | tar -x -C /tmp/before``): the code
                    before a change, measured beside it in the same run (``--what-if before+tracing``)
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.gc_governor import TunableCollector

VARIANTS = (
    "gc-stats",
    "gc-tuned",
    "gc-off",
    "gc-50k-wide",
    "gc-200k-wide",
    "gc-500k-wide",
    "gc-1m-wide",
    "no-telemetry",
    "no-gc-hold",
    "tracemalloc",
    "object-census",
    "metrics",
    "tracing",
    "before",
)

# An OTLP/HTTP sink: accepts every export and answers an empty ExportTraceServiceResponse.
_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def gc_stats() -> None:
    """Sum the collector's pauses by generation and the cyclic garbage it found; printed at exit (and
    every 10 s) as ``GC <seconds> in <n> collections (gen0 <s>/<n>, ...), <k> unreachable objects freed``."""
    import atexit

    spent = [0.0, 0.0, 0.0]
    count = [0, 0, 0]
    collected = [0]
    clock = {"started": 0.0, "reported": time.perf_counter()}

    def callback(phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            clock["started"] = now
            return
        generation = info["generation"]
        collected[0] += info["collected"]
        spent[generation] += now - clock["started"]
        count[generation] += 1
        if now - clock["reported"] > 10:
            clock["reported"] = now
            report()

    def report() -> None:
        parts = ", ".join(f"gen{g} {spent[g]:.3f} s/{count[g]}" for g in range(3))
        print(
            f"GC {sum(spent):.3f} s in {sum(count)} collections ({parts}), {collected[0]} unreachable objects freed",
            flush=True,
        )

    gc.callbacks.append(callback)
    atexit.register(report)


def object_census(every: float = 1.0, top: int = 25) -> None:
    """A thread that counts the collector-tracked objects by type every second and prints the census
    whenever the count reaches a new peak: what an in-flight request keeps alive (and walks)."""
    import collections
    import threading

    def watch() -> None:
        peak = 0
        while True:
            time.sleep(every)
            objects = gc.get_objects()
            if len(objects) <= peak * 1.05:
                continue
            peak = len(objects)
            census = collections.Counter(type(o).__qualname__ for o in objects)
            del objects
            lines = [f"CENSUS {peak} tracked objects; top types:"]
            lines += [f"CENSUS {count:>9} {name}" for name, count in census.most_common(top)]
            print("\n".join(lines), flush=True)

    threading.Thread(target=watch, name="object-census", daemon=True).start()


def gc_threshold(*threshold: int) -> Callable[[], None]:
    """The collector's thresholds set after ``cmn serve`` tuned them (in gc_governor.tune_collector)."""

    def apply() -> None:
        import gateway.gc_governor

        tune = gateway.gc_governor.tune_collector

        def tuned(collector: TunableCollector) -> None:
            tune(collector)
            gc.set_threshold(*threshold)

        gateway.gc_governor.tune_collector = tuned

    return apply


def gc_off() -> None:
    """No cyclic collection at all while serving: the upper bound of what collector tuning can buy."""
    import gateway.gc_governor

    tune = gateway.gc_governor.tune_collector

    def off(collector: TunableCollector) -> None:
        tune(collector)
        gc.disable()

    gateway.gc_governor.tune_collector = off


def no_gc_hold() -> None:
    """Automatic collection never held off during bursts (what ``cmn serve`` did before the governor)."""
    from gateway.gc_governor import CollectionGovernor

    CollectionGovernor.step = lambda self: None  # type: ignore[method-assign]  # the experiment itself


def no_telemetry() -> None:
    from gateway.telemetry.service import TelemetryService

    async def skip(self: TelemetryService, event: Any, trace_headers: Any, *, via: Any) -> None:
        return None

    TelemetryService.publish = skip  # type: ignore[method-assign]  # the experiment itself


def trace_allocations(every: float = 3.0, top: int = 15) -> None:
    """A thread that, every few seconds, prints the biggest allocation sites if memory hit a new peak."""
    import threading
    import tracemalloc

    tracemalloc.start(1)

    def watch() -> None:
        peak_seen = 0
        while True:
            time.sleep(every)
            current, _ = tracemalloc.get_traced_memory()
            if current < peak_seen * 1.1:
                continue
            peak_seen = current
            stats = tracemalloc.take_snapshot().statistics("lineno")[:top]
            lines = [f"ALLOC {current / 2**20:.1f} MiB traced; top sites:"]
            lines += [f"ALLOC {s.size / 2**20:8.1f} MiB {s.count:>8} blocks  {s.traceback[0]}" for s in stats]
            print("\n".join(lines), flush=True)

    threading.Thread(target=watch, name="tracemalloc-watch", daemon=True).start()


_SCRAPER = """
import sys, time, urllib.request
while True:
    time.sleep(0.1)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=1).read()
    except OSError:
        pass
"""


def metrics_on() -> None:
    """Metrics on, scraped every 100 ms (far more eagerly than Prometheus' usual 15 s) from another
    process, so only the gateway's side of a scrape counts."""
    import atexit
    import os
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"ENABLE_METRICS": "true", "METRICS_PORT": str(port)})
    scraper = subprocess.Popen([sys.executable, "-c", _SCRAPER, str(port)])
    atexit.register(scraper.kill)


def tracing_on() -> None:
    import atexit
    import os
    import subprocess

    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    port = sink.stdout.readline().strip()
    atexit.register(sink.kill)
    os.environ["OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"


def before() -> None:
    """Import ``gateway`` from another checkout: first on sys.path, ahead of the editable install."""
    import os
    from pathlib import Path

    source = os.environ.get("CMN_BENCH_GATEWAY_SOURCE")
    if not source or not (Path(source) / "gateway" / "__init__.py").is_file():
        raise SystemExit("the 'before' variant needs CMN_BENCH_GATEWAY_SOURCE=<dir holding gateway/>")
    if any(name == "gateway" or name.startswith("gateway.") for name in sys.modules):
        raise SystemExit("'before' must come first: another variant already imported this checkout's gateway")
    sys.path.insert(0, str(Path(source).resolve()))


APPLY: dict[str, Callable[[], None]] = {
    "before": before,
    "metrics": metrics_on,
    "tracing": tracing_on,
    "gc-stats": gc_stats,
    "gc-tuned": gc_threshold(50_000, 20, 20),
    "no-telemetry": no_telemetry,
    "no-gc-hold": no_gc_hold,
    "gc-off": gc_off,
    "gc-50k-wide": gc_threshold(50_000, 100, 100),
    "gc-200k-wide": gc_threshold(200_000, 100, 100),
    "gc-1m-wide": gc_threshold(1_000_000, 100, 100),
    "gc-500k-wide": gc_threshold(500_000, 100, 100),
    "tracemalloc": trace_allocations,
    "object-census": object_census,
}


def main() -> None:
    names = sys.argv[1:]
    unknown = [n for n in names if n not in APPLY]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    for name in names:
        APPLY[name]()
    from gateway.cli import main as cmn

    sys.argv = ["cmn", "serve"]
    cmn()


if __name__ == "__main__":
    main()
