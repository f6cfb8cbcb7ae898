"""The benchmark upstream, run as its own process: ``python -m tests.performance.bench_upstream``.

``/echo`` answers the JSON body it was sent (``{}`` when none); ``/hold?ms=N`` holds the request
N ms, then answers ``{"ok": true}`` (the 10,000-concurrency trial). Prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from tests.performance.bench_procs import run_loop_main

EMPTY = b"{}"


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body or EMPTY, content_type="application/json")


async def hold(request: web.Request) -> web.Response:
    await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
    return web.Response(body=b'{"ok":true}', content_type="application/json")


def bench_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/hold", hold)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(bench_app(), access_log=None)
    await runner.setup()
    # The 10,000-connection trial connects all at once: take the kernel's largest accept queue.
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=65535)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    run_loop_main(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
