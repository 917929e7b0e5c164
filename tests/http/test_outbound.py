"""HTTP to tenant URLs reaches public addresses only, checked after DNS resolution."""

from __future__ import annotations

import httpx
import pytest

from atelier.http.outbound import is_public, redacted, scrubbed, tenant_client, unredacted
from tests.live import serve


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # loopback dressed as IPv6
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


async def test_the_client_refuses_a_name_that_resolves_to_loopback() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    reached: list[str] = []

    async def endpoint(request: object) -> PlainTextResponse:
        reached.append("yes")
        return PlainTextResponse("internal")

    app = Starlette(routes=[Route("/", endpoint)])
    async with serve(app) as url:  # type: ignore[arg-type]
        port = url.rsplit(":", 1)[1]
        async with tenant_client(allow_private=False, timeout=5) as client:
            for host in ("127.0.0.1", "localhost"):
                with pytest.raises(httpx.ConnectError, match="non-public address"):
                    await client.get(f"http://{host}:{port}/")
        assert reached == []
        async with tenant_client(allow_private=True, timeout=5) as client:
            assert (await client.get(f"http://localhost:{port}/")).text == "internal"


async def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch) -> None:
    """DNS rebinding: a name answers a public address when it is checked and loopback a
    moment later. The connection is made to the address checked, never to the name again
    (no packet leaves: the inner connect only records what it was asked)."""
    import socket

    from atelier.http import outbound

    answers = iter(["93.184.216.34", "127.0.0.1"])  # public first, then loopback

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    asked: list[str] = []

    async def recorded(host, port, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(host)
        raise OSError("not connecting anywhere in a test")

    monkeypatch.setattr(outbound.socket, "getaddrinfo", rebinding)
    backend = outbound.PublicOnlyBackend(allow_private=False)
    monkeypatch.setattr(backend.inner, "connect_tcp", recorded)
    with pytest.raises(OSError, match="not connecting"):
        await backend.connect_tcp("rebind.example", 443)
    assert asked == ["93.184.216.34"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/mcp", "https://h.example/mcp"),
        ("https://h.example/mcp?key=s3cret", "https://h.example/mcp?key=redacted"),
        ("https://h.example/x?a=1&b=&flag", "https://h.example/x?a=redacted&b=redacted&redacted"),
        ("https://h.example:8443/x?sig=a%3Db#top", "https://h.example:8443/x?sig=redacted#top"),
    ],
)
def test_a_urls_query_values_are_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert unredacted(shown, url) == url  # sent back as shown: the URL kept
    assert unredacted(shown + "&more=1", url) == shown + "&more=1"  # a change is a change
    failure = f"Client error '401 Unauthorized' for url '{url}'"
    assert scrubbed(failure, url) == f"Client error '401 Unauthorized' for url '{shown}'"
