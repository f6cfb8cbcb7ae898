"""A whole gateway inside a test, with no broker: ``gateway.testing.InMemoryGateway``.

    async def test_charge_is_sent_to_payments() -> None:
        async def payments(request: web.Request) -> web.Response:
            return web.json_response({"id": "ch_1"}, status=201)

        async with InMemoryGateway({"payments": payments}) as gateway, gateway.client() as client:
            reply = await client.request("payments", "POST", "/v1/charges", json={"amount": 5})
        assert reply.raise_for_error().status == 201

It runs the real gateway (guard, admission, retries, breakers, idempotency, telemetry) over a
``MemoryTransport``; the upstreams are the test's own aiohttp handlers or applications, served on
127.0.0.1 for the test's duration (or any URL, given as a string). Nothing reads the process
environment: settings are the defaults plus what the test passes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from aiohttp import web

from gateway.app import Gateway, load_config
from gateway.client import GatewayClient
from gateway.clock import Clock
from gateway.envelope.codec import JSON
from gateway.events import RecordingObserver
from gateway.settings import Settings
from gateway.testing import MemoryRequester, MemoryTransport

UpstreamHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Upstream = UpstreamHandler | web.Application | str


class InMemoryGateway:
    """``upstreams``: name → an aiohttp handler, an ``aiohttp.web.Application`` or a URL. ``config``:
    per upstream, the rest of its entry in the upstreams file (``retry``, ``breaker``, ``access`` ...);
    ``document``: more top-level sections (``security``); ``settings``: environment settings by name
    (``RETRY_ATTEMPTS=1``). ``events`` records every event the gateway raised."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        document: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._config = {name: dict(entry) for name, entry in (config or {}).items()}
        if unknown := sorted(set(self._config) - set(self._upstreams)):
            raise ValueError(f"config for upstreams that are not given: {', '.join(unknown)}")
        self._document = dict(document or {})
        self._settings = {"ENABLE_METRICS": False, **(settings or {})}
        self._clock = clock
        self.transport = MemoryTransport()
        self.events = RecordingObserver()
        self.urls: dict[str, str] = {}
        self.gateway: Gateway | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> InMemoryGateway:
        try:
            for name, upstream in self._upstreams.items():
                self.urls[name] = upstream if isinstance(upstream, str) else await self._serve(upstream)
            entries = {name: {**self._config.get(name, {}), "endpoints": [url]} for name, url in self.urls.items()}
            settings = Settings.model_validate(self._settings)  # defaults + the test's, never the environment
            config = load_config(settings, {**self._document, "upstreams": entries})
            self.gateway = Gateway(config, clock=self._clock, observers=[self.events], transports=[self.transport])
            await self._stack.enter_async_context(self.gateway)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _serve(self, upstream: UpstreamHandler | web.Application) -> str:
        app = upstream if isinstance(upstream, web.Application) else _app_of(upstream)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def client(
        self, *, codec: str = JSON, key_id: str | None = None, secret: str | bytes | None = None
    ) -> GatewayClient:
        """A ``GatewayClient`` on this gateway (``async with`` it); each has a reply address of its own."""
        return GatewayClient(
            MemoryRequester(self.transport), clock=self._clock, codec=codec, key_id=key_id, secret=secret
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def __repr__(self) -> str:
        state = "running" if self.gateway is not None else "not started"
        return f"<InMemoryGateway [{state}] upstreams={sorted(self._upstreams)} {self.transport!r}>"


def _app_of(handler: UpstreamHandler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
