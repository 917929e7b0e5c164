"""Small helpers for reading and writing what the middleware keeps in the ASGI scope."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.types import Scope

from atelier.tenants.principal import USER_ID_PATTERN, Principal

__all__ = ["USER_ID_PATTERN", "Principal", "client_ip", "principal", "state"]


def state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def principal(scope: Scope) -> Principal | None:
    return state(scope).get("principal")


def client_ip(
    scope: Scope, trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The caller's address; ``X-Forwarded-For`` is believed only when a trusted proxy sent it."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not _is_trusted(peer, trusted_proxies):
        return str(peer)
    forwarded: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded += [part.strip() for part in value.decode("latin-1").split(",")]
    # Walk from the nearest hop outwards; the first address not a trusted proxy is the client.
    for hop in reversed(forwarded):
        if not _is_trusted(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return str(peer)
    return str(peer)


def _is_trusted(
    address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
