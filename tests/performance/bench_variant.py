"""``cmn serve`` with one experimental change, to measure what a suspected hot spot costs.

    python -m tests.performance.bench_variant VARIANT [VARIANT ...]

Nothing here is how CMN runs: these are what-if measurements for the profile report, each named
for what it changes. The gateway code itself is untouched; the change is applied in this process
before ``gateway.cli`` starts.

    gc-stats        unchanged, but reports the time spent in the garbage collector on exit
    gc-tuned        gc.freeze() of everything imported at start-up and a 50,000-allocation young generation
    no-telemetry    request telemetry events are observed but never published (nor confirmed)
    tracemalloc     unchanged, but prints the top allocation sites whenever traced memory reaches a new peak
    metrics         ENABLE_METRICS=true (Prometheus registry + /metrics server, scraped every 100 ms)
    tracing         OTLP_ENDPOINT set: spans for every request and attempt, exported over OTLP/HTTP to a
                    sink in a separate process (so receiving costs the gateway nothing)
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = ("gc-stats", "gc-tuned", "no-telemetry", "tracemalloc", "metrics", "tracing")

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
    """Sum the collector's pauses; printed at exit (and every 10 s) as ``GC <seconds> in <n> collections``."""
    import atexit

    spent = {"total": 0.0, "count": 0.0, "started": 0.0, "reported": time.perf_counter()}

    def callback(phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            spent["started"] = now
            return
        spent["total"] += now - spent["started"]
        spent["count"] += 1
        if now - spent["reported"] > 10:
            spent["reported"] = now
            report()

    def report() -> None:
        print(f"GC {spent['total']:.3f} s in {spent['count']:.0f} collections", flush=True)

    gc.callbacks.append(callback)
    atexit.register(report)


def gc_tuned() -> None:
    import gateway.app
    import gateway.cli  # noqa: F401

    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def no_telemetry() -> None:
    from gateway.telemetry.service import TelemetryService

    async def skip(self: TelemetryService, publisher: Any, event_type: str, body: bytes, headers: Any) -> None:
        return None

    TelemetryService._publish_confirmed = skip  # type: ignore[method-assign]  # the experiment itself


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


APPLY: dict[str, Callable[[], None]] = {
    "metrics": metrics_on,
    "tracing": tracing_on,
    "gc-stats": gc_stats,
    "gc-tuned": gc_tuned,
    "no-telemetry": no_telemetry,
    "tracemalloc": trace_allocations,
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
