"""A fleet of real `cmn serve` replicas and two real endpoints, one of which can turn bad: for the shared
health fleet test (test_fleet_health.py) and its benchmark (tests/performance/benchmark_shared_health.py).

The bad endpoint knows which replica each request comes from: it looks the client socket of the
connection up in /proc (the socket's inode in /proc/net/tcp, then which replica process holds it). So
it can fail for every replica, or only for one, as if only that replica's network path to it were
broken, while the endpoint URL stays the same for the whole fleet (verdicts are about a URL).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from gateway.client import GatewayClient
from tests.fixtures.upstreams import free_port, start_app
from tests.integration.process import ServeProcess


def _client_inode(client_port: int, server_port: int) -> str | None:
    """The inode of the loopback socket whose local port is ``client_port``, connected to ``server_port``."""
    want_local, want_remote = f":{client_port:04X}", f":{server_port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return fields[9]
    return None


def _holds(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


@dataclass
class Endpoint:
    """An aiohttp endpoint: 200 until ``turn()``, then 503 for ``sick`` replicas (every one when None)."""

    replicas: dict[str, int] = field(default_factory=dict)  # name -> pid
    turned: bool = False
    sick: set[str] | None = None
    hits_after: Counter[str] = field(default_factory=Counter)  # by replica, once turned
    hits: int = 0
    port: int = 0
    _owners: dict[int, str] = field(default_factory=dict)  # client port -> replica (a connection's lifetime)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Endpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await start_app(app)
        return self

    def turn(self, sick: set[str] | None = None) -> None:
        self.sick, self.turned = sick, True
        self.hits_after.clear()

    def owner(self, client_port: int) -> str:
        known = self._owners.get(client_port)
        if known is not None:
            return known
        inode = _client_inode(client_port, self.port)
        name = next((n for n, pid in self.replicas.items() if inode and _holds(pid, inode)), "?")
        self._owners[client_port] = name
        return name

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if not self.turned:
            return web.json_response({"ok": True})
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        replica = self.owner(int(peer[1])) if peer else "?"
        self.hits_after[replica] += 1
        if self.sick is None or replica in self.sick:
            return web.json_response({"ok": False}, status=503)
        return web.json_response({"ok": True})

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def upstreams_file(good: str, bad: str, **payments: Any) -> dict[str, Any]:
    """``payments`` over both endpoints, round robin, so each replica sends the bad one half its traffic."""
    return {"payments": {"endpoints": [good, bad], "load_balancer": "round_robin", **payments}}


@dataclass
class Replica:
    name: str
    process: ServeProcess
    metrics_port: int

    async def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        timeout = aiohttp.ClientTimeout(total=2.0)  # a paused replica accepts the connection and says nothing
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            return await response.text()

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None when absent or the replica does not answer)."""
        try:
            text = await self.get("/metrics")
        except (aiohttp.ClientError, TimeoutError):
            return None
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            series, _, rest = head.partition("{")
            if series == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
                return float(value)
        return None

    async def endpoint(self, url: str) -> dict[str, Any] | None:
        """The payments endpoint ``url`` as /admin/upstreams shows it (None when the replica does not answer)."""
        try:
            document = orjson.loads(await self.get("/admin/upstreams?upstream=payments"))
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None
        for upstream in document["upstreams"]:
            for item in upstream["endpoints"]:
                if item["url"] == url:
                    return dict(item)
        return None

    async def breaker(self, url: str) -> str | None:
        """The payments endpoint's breaker state."""
        item = await self.endpoint(url)
        return str(item["breaker"]["state"]) if item is not None else None

    @property
    def log(self) -> str:
        return self.process.log


async def start_fleet(
    tmp: Path,
    env: Mapping[str, str],
    upstreams: dict[str, Any],
    count: int = 3,
    tag: str | None = None,
    security: dict[str, Any] | None = None,
) -> list[Replica]:
    """``count`` replicas; ``security`` is the upstreams file's ``security:`` block (signing keys)."""
    tag = tag or uuid.uuid4().hex[:8]
    replicas = []
    for i in range(count):
        name = f"health-{tag}-{i}"
        (tmp / name).mkdir()
        port = free_port()
        extra = {"CMN_INSTANCE": name, "ENABLE_METRICS": "true", "METRICS_PORT": str(port)}
        if security is not None:
            file = tmp / name / "gateway.yaml"
            file.write_text(yaml.safe_dump({"upstreams": upstreams, "security": security}))
            extra["CMN_UPSTREAMS_FILE"] = str(file)
        process = ServeProcess(tmp / name, upstreams, {**env, **extra})
        await process.start()
        replicas.append(Replica(name, process, port))
    return replicas


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not await check():
        if loop.time() > end:
            raise TimeoutError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)


async def fleet_ready(replicas: list[Replica], within: float = 30.0) -> None:
    """Every replica serves its metrics port and hears every other one on cmn.control."""

    async def all_heard() -> bool:
        live = await asyncio.gather(*(r.metric("cmn_shared_health_live_peers") for r in replicas))
        return all(v == len(replicas) - 1 for v in live)

    await until(all_heard, within, "every replica hears its peers")


async def drive(client: GatewayClient, count: int, *, concurrency: int = 4, rate: float | None = None) -> list[int]:
    """``count`` GETs to payments, ``concurrency`` at a time (at most ``rate`` per second): the statuses."""
    statuses: list[int] = []
    gap = 1.0 / rate if rate else 0.0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            reply = await client.request("payments", "GET", f"/pay/{i}", timeout=20)
            statuses.append(reply.status or 0)
            if gap:
                await asyncio.sleep(gap * concurrency)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
