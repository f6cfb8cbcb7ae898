"""An endpoint with a slow tail, as its own process: ``python -m tests.performance.bench_slow_upstream``.

``--slow-share 0.1 --slow-ms 1000`` answers a random 10 % of requests after 1 s and the rest at once
(seeded, so every run draws the same sequence). ``GET /_stats`` answers ``{"hits": N}``: requests
received so far, counted when they arrive (a hedge's loser counts, though nobody reads its answer).
Prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random

from aiohttp import web

from tests.performance.bench_procs import run_loop_main, until_stopped


def slow_tail_app(slow_share: float, slow_ms: int, seed: int) -> web.Application:
    rng = random.Random(seed)  # nosec B311  # which requests are slow, not a secret
    hits = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        if rng.random() < slow_share:
            await asyncio.sleep(slow_ms / 1000)
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=json.dumps({"hits": hits}).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(slow_share: float, slow_ms: int, seed: int) -> None:
    runner = web.AppRunner(slow_tail_app(slow_share, slow_ms, seed), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await until_stopped()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow-share", type=float, default=0.0)
    parser.add_argument("--slow-ms", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run_loop_main(serve(args.slow_share, args.slow_ms, args.seed))


if __name__ == "__main__":
    main()
