"""Small helpers for reading and writing what the middleware keeps in the ASGI scope."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

# An end user's id, however it is given (X-User-ID, the Responses API's `user`, ...): one
# rule, so that every user is reachable from every API.
USER_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and key come from the verified API key, never from headers."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID
    user_id: str | None


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
