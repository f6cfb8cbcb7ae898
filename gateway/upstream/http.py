"""One HTTP exchange over aiohttp, with a bounded response read; aiohttp's errors end here."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.errors import InternalError, PayloadTooLargeError
from gateway.upstream.outcome import AttemptTimeoutError, ConnectFailedError, ConnectionDroppedError

# aiohttp decompresses bodies, so the framing headers of the wire no longer describe what we return.
_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive"})
_CHUNK = 64 * 1024


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
    headers: Mapping[str, str]
    body: bytes | None
    timeout: float
    connect_timeout: float
    max_response_bytes: int
    ssl_context: ssl.SSLContext | None = None


async def exchange(session: aiohttp.ClientSession, ex: Exchange) -> HttpResult:
    timeout = aiohttp.ClientTimeout(total=ex.timeout, connect=min(ex.connect_timeout, ex.timeout))
    try:
        async with session.request(
            ex.method,
            URL(ex.url),
            headers=dict(ex.headers),
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
    except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
        raise ConnectFailedError(f"cannot connect to {_origin(ex.url)}: {exc}") from exc
    except TimeoutError as exc:
        raise AttemptTimeoutError(f"{_origin(ex.url)} did not answer within {ex.timeout:.3f} s", sent=True) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise ConnectionDroppedError(f"connection to {_origin(ex.url)} broke: {exc!r}") from exc
    except aiohttp.ClientError as exc:
        raise InternalError(f"HTTP client error calling {_origin(ex.url)}: {exc!r}") from exc


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


def _origin(url: str) -> str:
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"
