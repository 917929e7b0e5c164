"""HTTP to URLs a tenant gave us (MCP servers, webhooks): only to public addresses.

Every address a host name resolves to must be public -- not loopback, private,
link-local, reserved or multicast -- unless a setting allows them; the connection then
goes to the address that was checked, so a second DNS answer cannot swap it (rebinding).
Redirects are checked the same way: each one is a new connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

import httpcore
import httpx
from pydantic import HttpUrl


class NonPublicAddress(httpcore.ConnectError):
    """The host resolves to an address tenants may not reach."""


# Tenants' host names are resolved on threads of their own: a slow DNS answer for one of
# them never holds the default executor's threads, which file I/O needs.
RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tenant-dns")
RESOLVE_TIMEOUT_SECONDS = 5.0
T = TypeVar("T")


def http_url(value: str, what: str) -> str:
    """``value`` if it is an http(s) URL with a host that the client which will connect
    to it reads as the validator does (a pydantic validator's check). Pydantic reads
    ``http://0177.0.0.1/`` as 127.0.0.1, httpx refuses it: such a URL is refused here,
    never checked against one host and sent to another. Credentials in the URL are
    refused: they would be shown in answers and logs like the rest of it."""
    try:
        url = HttpUrl(value)
        sent = httpx.URL(value)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"{what} must be an http(s) URL") from exc
    if url.scheme not in ("http", "https") or not url.host or not sent.host:
        raise ValueError(f"{what} must be an http(s) URL")
    if sent.userinfo:
        raise ValueError(f"{what} may not carry credentials (user:password@); send them as headers")
    return value


REDACTED = "redacted"


def redacted(url: str) -> str:
    """``url`` as answers, events and logs show it: a query's values are often secrets
    (``?token=...``, ``?sig=...``), so each is shown as ``redacted``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    hidden = (
        f"{name}={REDACTED}" if sep else REDACTED
        for name, sep, _ in (part.partition("=") for part in parts.query.split("&"))
    )
    return urllib.parse.urlunsplit(parts._replace(query="&".join(hidden)))


def unredacted(sent: str, kept: str | None) -> str:
    """A URL a client sends back as it was shown (its query redacted) means the one kept:
    a read-modify-write of a definition keeps its URL's secrets."""
    if kept is not None and sent != kept and sent == redacted(kept):
        return kept
    return sent


def scrubbed(text: str, url: str) -> str:
    """``text`` (an error's message, say) with ``url``'s query redacted."""
    return text.replace(url, redacted(url)) if url != redacted(url) else text


class UrlNotAllowed(Exception):
    """A tenant's URL whose host is (or resolves to) an address tenants may not reach, or
    does not resolve at all."""


async def check_public(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host is (or resolves to) a loopback, private or link-local
    address (``UrlNotAllowed``). Connecting checks again, on the address it connects to
    (DNS may change)."""
    if allow_private:
        return
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:  # the schemas refuse these first; never a 500 here
        raise UrlNotAllowed(f"{url!r} is not a URL this server can connect to") from exc
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            await resolve(parsed.host, port, allow_private=False)
    except NonPublicAddress as exc:
        raise UrlNotAllowed(str(exc)) from exc
    except (httpcore.ConnectError, TimeoutError) as exc:
        raise UrlNotAllowed(f"{parsed.host} cannot be resolved") from exc


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to; ``NonPublicAddress`` if one of them is not
    public (and private ones are not allowed)."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        found = await asyncio.get_running_loop().run_in_executor(RESOLVER, lookup)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in found]
    refused = [a for a in addresses if not is_public(a)]
    if refused and not allow_private:
        raise NonPublicAddress(f"{host} resolves to a non-public address ({refused[0]})")
    return addresses


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port, allow_private=self.allow_private)
        return await self.inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from tenant URLs")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class ResponseTooLarge(Exception):
    """A tenant's peer sent more than it may: reading stopped at the cap."""


class ByteCap:
    """The bytes every answer of one client may add up to, counted as they are read: a
    peer that sends more makes this process hold the cap, not what it sent. ``tripped``
    is set when it is passed, so whoever waits on the client can stop at once (a client
    library may swallow the error the read raised)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.read = 0
        self.tripped = asyncio.Event()

    @property
    def reason(self) -> str:
        return f"{self.what} is over {self.limit} bytes; reading stopped there"

    def count(self, size: int) -> None:
        self.read += size
        if self.read > self.limit:
            self.tripped.set()
            raise ResponseTooLarge(self.reason)


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, cap: ByteCap) -> None:
        self.inner = inner
        self.cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.cap.count(len(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, cap: ByteCap) -> None:
        self.inner = inner
        self.cap = cap

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self.cap)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def within(cap: ByteCap, work: Awaitable[T]) -> T:
    """``work``, stopped with ``ResponseTooLarge`` as soon as ``cap`` is passed."""
    task = asyncio.ensure_future(work)
    tripped = asyncio.ensure_future(cap.tripped.wait())
    try:
        await asyncio.wait({task, tripped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        tripped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if cap.tripped.is_set():
        raise ResponseTooLarge(cap.reason)
    return task.result()


def tenant_client(
    *,
    allow_private: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
    cap: ByteCap | None = None,
) -> httpx.AsyncClient:
    """An httpx client for a tenant's URL: public addresses only, redirects not followed,
    what it reads counted against ``cap``."""
    transport = httpx.AsyncHTTPTransport()
    # httpx takes no network backend; its pool does. (tests/http/test_outbound.py proves
    # the refusal through this client, so an httpx upgrade that moves it fails there.)
    transport._pool = httpcore.AsyncConnectionPool(network_backend=PublicOnlyBackend(allow_private))
    return httpx.AsyncClient(
        transport=transport if cap is None else _CappedTransport(transport, cap),
        headers=headers,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
    )
