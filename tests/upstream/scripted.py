"""Loopback endpoints that follow one shared script: the n-th copy of a request (by path, whichever
endpoint it reaches) waits and answers as the script says. An endpoint notices when the client
drops the connection of a request it is still holding (a cancelled hedge loser)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from tests.fixtures.upstreams import StartUpstream


@dataclass(frozen=True)
class Copy:
    delay: float = 0.0
    status: int = 200


class Script:
    """What the n-th copy of each request does; copies past the list do ``rest``."""

    def __init__(self, *copies: Copy, rest: Copy = Copy()) -> None:
        self.copies = list(copies)
        self.rest = rest
        self._seen: Counter[str] = Counter()

    def next_copy(self, path: str) -> Copy:
        index = self._seen[path]
        self._seen[path] += 1
        return self.copies[index] if index < len(self.copies) else self.rest


class Endpoint:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.url = ""
        self.hits = self.answered = self.dropped = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        copy = self.script.next_copy(request.path_qs)
        loop = asyncio.get_running_loop()
        until = loop.time() + copy.delay
        while loop.time() < until:  # the endpoint's "work", watching for the client to hang up
            if request.transport is None or request.transport.is_closing():
                self.dropped += 1
                return web.Response(status=599)  # nobody is left to read it
            await asyncio.sleep(0.005)
        self.answered += 1
        return web.json_response({"by": self.url}, status=copy.status)


async def pair(start: StartUpstream, script: Script) -> tuple[Endpoint, Endpoint]:
    endpoints = (Endpoint(script), Endpoint(script))
    for endpoint in endpoints:
        endpoint.url = (await start(app=endpoint.app())).url
    return endpoints
