"""One HTTP exchange over aiohttp, with a bounded response read; aiohttp's errors end here.

Every message this module builds is the endpoint's origin plus a short reason (an OS error's text,
a TLS verification message, an exception's class name). It never embeds ``str()`` or ``repr()`` of
a foreign exception: aiohttp's carry object reprs (``ssl:<ssl.SSLContext object at 0x…>``) and
request details, and these messages go back to callers.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.errors import InternalError, PayloadTooLargeError
from gateway.upstream.outcome import (
    AttemptTimeoutError,
    ConnectFailedError,
    ConnectionDroppedError,
    TlsVerificationFailedError,
)

# aiohttp decompresses bodies, so the framing headers of the wire no longer describe what we return.
_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive"})
_CHUNK = 64 * 1024
# asyncio and ssl raise some of these without an errno; the OS's words for them all the same.
_ERRNO_OF: dict[type[OSError], int] = {
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    BrokenPipeError: errno.EPIPE,
}


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one attempt sends; ``timeout`` covers connect, send and the whole response read."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)  # carries the upstream credential
    body: bytes | None = field(repr=False)
    timeout: float
    connect_timeout: float
    max_response_bytes: int
    ssl_context: ssl.SSLContext | None = None


class AttemptSpan(Protocol):
    """The trace span of one attempt: ``inject`` its context, then end it with ``answered`` or ``failed``."""

    def inject(self, headers: dict[str, str]) -> None: ...

    def answered(self, status: int) -> None: ...

    def failed(self, error: BaseException) -> None: ...


class AttemptTracer(Protocol):
    """Starts an attempt's span, or returns None when the request around it is not traced (then nothing
    else is done: an unsampled attempt costs this one call)."""

    def start(self, method: str, url: URL) -> AttemptSpan | None: ...


def exchange(
    session: aiohttp.ClientSession, ex: Exchange, tracer: AttemptTracer | None = None
) -> Coroutine[Any, Any, HttpResult]:
    """The attempt's coroutine: untraced, ``_exchange``'s own, so no frame sits between the caller and
    aiohttp (every resume of a request passes through each frame of its await chain)."""
    url = URL(ex.url)
    headers = dict(ex.headers)
    span = tracer.start(ex.method, url) if tracer is not None else None
    if span is None:
        return _exchange(session, ex, url, headers)
    return _traced(span, session, ex, url, headers)


async def _traced(
    span: AttemptSpan, session: aiohttp.ClientSession, ex: Exchange, url: URL, headers: dict[str, str]
) -> HttpResult:
    span.inject(headers)
    try:
        result = await _exchange(session, ex, url, headers)
    except BaseException as exc:
        span.failed(exc)
        raise
    span.answered(result.status)
    return result


async def _exchange(session: aiohttp.ClientSession, ex: Exchange, url: URL, headers: dict[str, str]) -> HttpResult:
    timeout = aiohttp.ClientTimeout(total=ex.timeout, connect=min(ex.connect_timeout, ex.timeout))
    try:
        async with session.request(
            ex.method,
            url,
            headers=headers,
            data=ex.body,
            timeout=timeout,
            ssl=ex.ssl_context if ex.ssl_context is not None else True,
            allow_redirects=False,
        ) as response:
            body = await _read_bounded(response, ex.max_response_bytes, ex.url)
            return HttpResult(response.status, _flatten(response.headers), body)
    except (PayloadTooLargeError, AttemptTimeoutError):
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise AttemptTimeoutError(f"connect to {_origin(ex.url)} timed out", sent=False) from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = _verify_reason(exc.certificate_error)
        raise TlsVerificationFailedError(
            f"TLS verification of {_origin(ex.url)} failed: {reason}", reason=reason
        ) from exc
    except aiohttp.ClientSSLError as exc:
        raise ConnectFailedError(f"TLS handshake with {_origin(ex.url)} failed ({_tls_reason(exc.os_error)})") from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectFailedError(f"cannot connect to {_origin(ex.url)}: {_os_reason(exc.os_error)}") from exc
    except TimeoutError as exc:
        raise AttemptTimeoutError(f"{_origin(ex.url)} did not answer within {ex.timeout:.3f} s", sent=True) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise ConnectionDroppedError(f"connection to {_origin(ex.url)} broke: {_dropped_reason(exc)}") from exc
    except aiohttp.ClientError as exc:
        raise InternalError(f"HTTP client error calling {_origin(ex.url)} ({type(exc).__name__})") from exc


async def _read_bounded(response: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()  # drop the connection rather than drain a body we refuse
        raise PayloadTooLargeError(f"response from {_origin(url)} is {declared} bytes, over the {limit}-byte limit")
    if declared is not None:
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            response.close()
            raise PayloadTooLargeError(f"response from {_origin(url)} exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _flatten(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _FRAMING:
            continue
        if not value.isascii():
            # aiohttp keeps raw non-UTF-8 header bytes as surrogates, which no JSON encoder accepts.
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        flat[key] = f"{flat[key]}, {value}" if key in flat else value
    return flat


def _verify_reason(error: BaseException) -> str:
    """OpenSSL's verification message ("certificate has expired", "Hostname mismatch, ...")."""
    message = getattr(error, "verify_message", None)
    return str(message).rstrip(".") if message else type(error).__name__


def _tls_reason(error: OSError) -> str:
    """An ssl.SSLError's reason code (WRONG_VERSION_NUMBER, TLSV1_ALERT_PROTOCOL_VERSION ...)."""
    reason = getattr(error, "reason", None)
    return str(reason) if reason else type(error).__name__


def _os_reason(error: OSError) -> str:
    """The OS's words ("Connection refused", "Name or service not known"), without addresses or objects."""
    if isinstance(error, socket.gaierror):
        return error.strerror or "name resolution failed"
    number = error.errno if error.errno is not None and error.errno > 0 else _ERRNO_OF.get(type(error))
    return os.strerror(number) if number is not None else type(error).__name__


def _dropped_reason(error: aiohttp.ClientError) -> str:
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(error, OSError):
        return _os_reason(error)
    return type(error).__name__


def _origin(url: str) -> str:
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"
