"""HTTP to URLs a tenant gave us (MCP servers): only to public addresses.

Every address a host name resolves to must be public -- not loopback, private,
link-local, reserved or multicast -- unless a setting allows them; the connection then
goes to the address that was checked, so a second DNS answer cannot swap it (rebinding).
Redirects are checked the same way: each one is a new connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class NonPublicAddress(httpcore.ConnectError):
    """The host resolves to an address tenants may not reach."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [str(info[4][0]) for info in found]
        refused = [a for a in addresses if not is_public(a)]
        if refused and not self.allow_private:
            raise NonPublicAddress(f"{host} resolves to a non-public address ({refused[0]})")
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


def tenant_client(
    *, allow_private: bool, timeout: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """An httpx client for a tenant's URL: public addresses only, redirects not followed."""
    transport = httpx.AsyncHTTPTransport()
    # httpx takes no network backend; its pool does. (tests/http/test_outbound.py proves
    # the refusal through this client, so an httpx upgrade that moves it fails there.)
    transport._pool = httpcore.AsyncConnectionPool(network_backend=PublicOnlyBackend(allow_private))
    return httpx.AsyncClient(
        transport=transport,
        headers=headers,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
    )
