"""A small sample upstream (a fake payments API) for `cmn demo`, the README's walkthrough and the benchmarks.

``POST /v1/charges`` answers 201 with the charge after a random delay of up to ``max_delay_ms``, except
that a charge whose ``amount`` ends in 02 (102, 402, 1002 ...) is declined with 402 ``card_declined``, the
way payment sandboxes decline test amounts. Declines used to be random (2 %): then the README's one
request failed for a user once in fifty tries, and its test with it."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

DECLINED_CENTS = 2  # an amount ending in 02 is declined


def payments_app(*, max_delay_ms: float = 5.0, seed: int | None = None) -> web.Application:
    rng = random.Random(seed)  # nosec B311  # simulated latency, not a secret

    async def charge(request: web.Request) -> web.Response:
        await asyncio.sleep(rng.uniform(0, max_delay_ms) / 1000)
        payload = await request.json() if request.can_read_body else {}
        amount = payload.get("amount") if isinstance(payload, dict) else None
        if isinstance(amount, int) and amount % 100 == DECLINED_CENTS:
            return web.json_response({"error": "card_declined"}, status=402)
        return web.json_response({"id": f"ch_{rng.getrandbits(48):012x}", "status": "succeeded", **payload}, status=201)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/charges", charge)
    app.router.add_get("/healthz", health)
    return app


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start ``app``; returns the runner (cleanup() stops it) and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    sockets = runner.addresses
    bound = sockets[0][1] if sockets else port
    return runner, f"http://{host}:{bound}"


async def _serve_forever(port: int) -> None:
    runner, url = await serve(payments_app(), port=port)
    print(f"sample upstream (a fake payments API: POST /v1/charges, GET /healthz) on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """``python -m gateway.sample.upstream [--port N]``: a stand-in for your API while you try CMN."""
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(prog="python -m gateway.sample.upstream", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8080)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(parser.parse_args().port))


if __name__ == "__main__":
    main()
