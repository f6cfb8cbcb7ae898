"""What callers are told when an attempt fails: the origin and a short reason, never an object repr.

TLS verification failures (unknown CA, wrong name, expired) are their own outcome and raise
``security.tls_verification_failed``; other handshake failures do not.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.certs.devca import DAY, DevCertificateAuthority
from gateway.certs.tls import server_context
from gateway.clock import SystemClock
from gateway.errors import UpstreamUnavailableError
from gateway.events import RecordingObserver, SecurityRefused
from gateway.upstream.config import UpstreamDefaults
from gateway.upstream.forward import build_forwarder
from gateway.upstream.outcome import ConnectFailedError, ConnectionDroppedError, TlsVerificationFailedError
from tests.fixtures.certs import StartTlsUpstream
from tests.fixtures.upstreams import start_app
from tests.upstream.helpers import dead_url, events_of, outbound, upstreams

# Anything that betrays a foreign exception's str()/repr() rather than our own words.
FOREIGN = re.compile(r"object at|0x[0-9a-f]+|ssl:|<|>|\[Errno|Connect call failed|ClientConnector|SSLContext")


def assert_clean(message: str) -> None:
    assert FOREIGN.search(message) is None, message
    assert "\n" not in message


async def failure_of(url: str, observer: RecordingObserver | None = None, **config: object) -> UpstreamUnavailableError:
    fwd = build_forwarder(
        upstreams(svc={"endpoints": [url], "retry": {"attempts": 1}, **config}),
        UpstreamDefaults(),
        clock=SystemClock(),
        observer=observer or RecordingObserver(),
    )
    async with fwd:
        with pytest.raises(UpstreamUnavailableError) as caught:
            await fwd.forward(outbound("svc"))
    return caught.value


async def test_a_refused_port_is_named_by_origin_and_the_os_reason() -> None:
    url = dead_url()
    error = await failure_of(url)
    assert isinstance(error, ConnectFailedError)
    assert error.code == "upstream_unavailable"
    assert (
        error.message == f"cannot connect to {url}: Connection refused"
    )  # was "... ssl:<ssl.SSLContext object at 0x…>"


async def test_an_unresolvable_host_is_named_without_the_resolver_internals() -> None:
    error = await failure_of("http://cmn-no-such-host.invalid:8080")
    assert isinstance(error, ConnectFailedError)
    assert error.message.startswith("cannot connect to http://cmn-no-such-host.invalid:8080: ")
    assert_clean(error.message)


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _close_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _truncate_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\nonly-some")
    await writer.drain()
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.close()


@pytest.fixture
async def dropping_server() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> str:
        server = await asyncio.start_server(behaviour, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (_close_after_request, "the server closed the connection"),
        (_truncate_body, "the response body was cut short"),
        (_reset, None),  # "Connection reset by peer" or a disconnect, by timing: either way our words
    ],
)
async def test_a_dropped_connection_is_named_by_origin_and_a_short_reason(
    dropping_server: Callable[[Behaviour], Awaitable[str]], behaviour: Behaviour, reason: str | None
) -> None:
    url = await dropping_server(behaviour)
    error = await failure_of(url)
    assert isinstance(error, ConnectionDroppedError)
    if reason is not None:
        assert error.message == f"connection to {url} broke: {reason}"
    else:
        assert re.fullmatch(rf"connection to {re.escape(url)} broke: [A-Za-z ]+", error.message), error.message


def _verification_events(observer: RecordingObserver) -> list[SecurityRefused]:
    return [e for e in events_of(observer, SecurityRefused) if e.kind == "tls_verification_failed"]


async def test_a_certificate_from_an_unknown_ca_raises_a_security_event(start_tls_upstream: StartTlsUpstream) -> None:
    upstream = await start_tls_upstream()  # its CA is the test's dev CA, which the gateway does not trust
    observer = RecordingObserver()
    error = await failure_of(upstream.url, observer)
    assert isinstance(error, TlsVerificationFailedError)
    assert error.code == "upstream_unavailable"
    assert error.message == f"TLS verification of {upstream.url} failed: unable to get local issuer certificate"
    [event] = _verification_events(observer)
    assert (event.type, event.upstream, event.request_id) == ("security.tls_verification_failed", "svc", "r1")
    assert event.reason == error.message
    assert upstream.client_serials == []  # the request never reached it


async def test_a_certificate_for_another_name_raises_a_security_event(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority, tmp_path: Path
) -> None:
    upstream = await start_tls_upstream(sans=("other.example",))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    observer = RecordingObserver()
    error = await failure_of(upstream.url, observer, tls={"ca_file": str(ca_file), "min_version": "1.2"})
    assert isinstance(error, TlsVerificationFailedError)
    assert error.message == (
        f"TLS verification of {upstream.url} failed: IP address mismatch, certificate is not valid for '127.0.0.1'"
    )
    assert [e.upstream for e in _verification_events(observer)] == ["svc"]


async def test_an_expired_certificate_raises_a_security_event(dev_ca: DevCertificateAuthority, tmp_path: Path) -> None:
    expired = dev_ca.issue("upstream", ("127.0.0.1",), now=time.time(), not_before=time.time() - 10 * DAY, days=1)
    runner, port = await start_app(_ok_app(), ssl_context=server_context(expired))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    observer = RecordingObserver()
    try:
        error = await failure_of(f"https://127.0.0.1:{port}", observer, tls={"ca_file": str(ca_file)})
    finally:
        await runner.cleanup()
    assert isinstance(error, TlsVerificationFailedError)
    assert error.message == f"TLS verification of https://127.0.0.1:{port} failed: certificate has expired"
    assert len(_verification_events(observer)) == 1


async def test_every_failed_verification_is_an_event_even_when_a_retry_succeeds_elsewhere(
    start_tls_upstream: StartTlsUpstream, dev_ca: DevCertificateAuthority, tmp_path: Path
) -> None:
    good, wrong_name = await start_tls_upstream(), await start_tls_upstream(sans=("other.example",))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(dev_ca.ca_pem)
    observer = RecordingObserver()
    config = {
        "endpoints": [wrong_name.url, good.url],
        "load_balancer": "round_robin",
        "tls": {"ca_file": str(ca_file), "min_version": "1.2"},
        "retry": {"attempts": 2, "backoff_base": 0.001},
    }
    fwd = build_forwarder(upstreams(svc=config), UpstreamDefaults(), clock=SystemClock(), observer=observer)
    async with fwd:
        responses = [await fwd.forward(outbound("svc")) for _ in range(4)]
    assert [r.status for r in responses] == [200] * 4
    assert {r.endpoint for r in responses} == {good.url}
    refused_attempts = sum(r.attempts - 1 for r in responses)  # the good endpoint answers at once
    assert refused_attempts >= 1  # round robin sends some first attempts to the wrong name
    assert len(_verification_events(observer)) == refused_attempts


async def test_a_refused_handshake_is_not_a_verification_failure(start_tls_upstream: StartTlsUpstream) -> None:
    legacy = await start_tls_upstream(max_version="1.2")  # the gateway wants TLS 1.3
    observer = RecordingObserver()
    error = await failure_of(legacy.url, observer)
    assert type(error) is ConnectFailedError
    # The server resets or alerts, by timing: either way the origin and a short reason.
    handshake = rf"TLS handshake with {re.escape(legacy.url)} failed \([A-Z0-9_]+\)"
    reset = rf"cannot connect to {re.escape(legacy.url)}: Connection reset by peer"
    assert re.fullmatch(f"{handshake}|{reset}", error.message), error.message
    assert _verification_events(observer) == []


def _ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    return app
