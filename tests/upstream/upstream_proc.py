"""A real upstream process for fault injection: ``python -m tests.upstream.upstream_proc PORT [DELAY_MS] [STATUS]``.

Answers every request with STATUS after DELAY_MS and a small JSON body naming its port, so a test
can SIGKILL it (an endpoint dying mid-traffic) and start it again on the same port (flapping).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


def app(port: int, delay_ms: int, status: int) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        await request.read()
        return web.json_response({"port": port, "path": request.path_qs}, status=status)

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


def main() -> None:
    port = int(sys.argv[1])
    delay_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    status = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    web.run_app(app(port, delay_ms, status), host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
