"""The console's files: served without a key from a fixed list, under a strict CSP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest


async def test_root_redirects_to_the_console(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/console/"
    assert (await client.get("/console")).headers["location"] == "/console/"


async def test_the_console_is_served_without_a_key_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/app.js">' in page.text
    assert "<script>" not in page.text  # nothing inline
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "unsafe" not in policy
    assert "connect-src 'self'" in policy
    script = await client.get("/console/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    # The API keeps its own, stricter policy.
    api = await client.get("/v1/models")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize(
    "path", ["/console/nope.js", "/console/..%2f..%2fpyproject.toml", "/console/endpoints.py"]
)
async def test_nothing_but_the_consoles_files_is_reachable(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


VENDORED = {
    # served as -> the file of the npm release it is (pinned by tests/js/package-lock.json)
    "marked.esm.js": "marked/lib/marked.esm.js",
    "purify.es.mjs": "dompurify/dist/purify.es.mjs",
}


@pytest.mark.parametrize(("name", "release"), VENDORED.items())
async def test_the_markdown_libraries_are_their_npm_releases_byte_for_byte(
    client: httpx.AsyncClient, name: str, release: str
) -> None:
    """Served from this package (no CDN), and unmodified: `make test` installs the pinned
    releases, and a copy that drifts from them fails here."""
    npm = Path(__file__).parents[1] / "js" / "node_modules" / release
    if not npm.exists():
        raise AssertionError(f"{npm} is missing: run `npm ci` in tests/js (make test does)")
    served = await client.get(f"/console/{name}")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/javascript")
    assert served.content == npm.read_bytes()
