"""The operations port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for Kubernetes probes,
``/admin/upstreams`` for operators (the instance's live state as JSON, read-only)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway.errors import ConfigError

StatusSource = Callable[[str | None], dict[str, Any] | None]
"""The instance's state document as JSON-ready data, every upstream's or the one named; None when
that upstream is not configured. The composition root passes it in: telemetry does not know upstreams."""


_NO_STORE = {"Cache-Control": "no-store"}


class MetricsServer:
    """An aiohttp server on ``host:port`` (``port=0`` picks a free one; ``port`` then tells which).

    ``/healthz`` answers 200 while the process serves at all (liveness); ``/readyz`` answers 200
    only while ``readiness()`` says the gateway is connected to its brokers and consuming.
    ``/admin/upstreams`` (when a ``status`` source is given) answers GET only, ``?upstream=NAME``
    narrows it (404 when NAME is not configured); any other method is a 405.
    Scrapes render on the event loop: a registry of a few thousand series renders in about a
    millisecond, and the pulled sources (consumer lag) are not safe to read from another thread.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "0.0.0.0",  # nosec B104  # probes and scrapes come from outside the pod
        port: int,
        readiness: Callable[[], bool],
        status: StatusSource | None = None,
    ) -> None:
        self._registry = registry
        self._status = status
        self._host = host
        self._requested_port = port
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MetricsServer is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._status is not None:
            app.router.add_get("/admin/upstreams", self._upstreams, allow_head=False)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except OSError as exc:
            await runner.cleanup()
            # A start-up mistake to fix (another process holds the port), said in one line.
            raise ConfigError(
                f"METRICS_PORT {self._requested_port}: cannot listen on {self._host}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            ready = bool(self._readiness())
        except Exception:  # noqa: BLE001 - a failing readiness check means "not ready", not a 500
            ready = False
        return web.Response(text="ready\n" if ready else "not ready\n", status=200 if ready else 503)

    async def _upstreams(self, request: web.Request) -> web.Response:
        assert self._status is not None  # the route exists only with a source
        document = self._status(request.query.get("upstream"))
        if document is None:
            return web.json_response({"error": "no such upstream"}, status=404, headers=_NO_STORE)
        return web.json_response(document, headers=_NO_STORE)

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._port is not None else "not started"
        return f"<MetricsServer {where}>"
