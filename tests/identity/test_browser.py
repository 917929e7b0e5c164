"""A product's page on another origin calls Atelier straight from Chromium with an end
user's token -- one Atelier minted for the product's server, or a JWT of the product's own
identity provider -- on both backends: create a conversation, upload a file, stream a run,
resume it with Last-Event-ID, cancel it; another user's conversation stays a 404 and the
tenant's administration a 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from tests.conftest import Caller
from tests.console.test_console import NO_CHROMIUM, chromium_path
from tests.identity.idp import AUDIENCE, ISSUER, IdentityProvider
from tests.live import serve, serve_started

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM)
PAGE = (Path(__file__).parent / "product_page.html").read_bytes()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {
        "offline_model_delay_seconds": 0.03,
        "identity_allow_private": True,
        "identity_jwks_refresh_seconds": 0,
    }


def product(atelier: str, caller: Caller, idp: IdentityProvider) -> FastAPI:
    """The product: its page, its server minting tokens with the secret key (which never
    leaves it), and its identity provider's keys."""
    app = FastAPI()

    @app.get("/")
    async def page() -> Response:
        return Response(PAGE, media_type="text/html")

    @app.get("/token")
    async def token(user: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=atelier) as http:
            minted = await http.post(
                "/v1/user-tokens",
                json={"user_id": user, "expires_in": 600},
                headers=caller.headers(None),
            )
        return dict(minted.json())

    @app.get("/idp-token")
    async def idp_token(user: str) -> dict[str, Any]:
        return {"token": idp.token(user)}

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return idp.jwks()

    return app


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.mark.parametrize("issued_by", ["atelier", "identity_provider"])
async def test_a_page_on_another_origin_works_with_its_users_token(
    app: FastAPI, caller: Caller, browser: Any, issued_by: str
) -> None:
    idp = IdentityProvider()
    async with serve_started(app) as atelier, serve(product(atelier, caller, idp)) as shop:
        admin = httpx.AsyncClient(base_url=atelier, headers=caller.headers(None), timeout=30)
        async with admin:
            assert (await admin.put("/v1/cors", json={"origins": [shop]})).status_code == 200
            trusted = await admin.put(
                "/v1/identity",
                json={
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": f"{shop}/.well-known/jwks.json",
                },
            )
            assert trusted.status_code == 200, trusted.text
            bobs = await admin.post("/v1/conversations", json={}, headers={"X-User-ID": "bob"})
        async with httpx.AsyncClient(base_url=shop) as http:
            path = "/token" if issued_by == "atelier" else "/idp-token"
            token = (await http.get(path, params={"user": "alice"})).json()["token"]

        page = await browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        await page.goto(shop)
        await page.wait_for_function("window.ready === true")
        out = await page.evaluate(
            "([atelier, token, notMine]) => window.scenario(atelier, token, notMine)",
            [atelier, token, bobs.json()["id"]],
        )
        protocols = await page.evaluate(
            "([atelier, token]) => window.protocols(atelier, token)", [atelier, token]
        )
        await page.close()

    assert problems == []
    assert protocols["aiSdk"]["status"] == 200
    assert protocols["aiSdk"]["protocol"] == "v1"  # the UI message stream's header, exposed
    assert protocols["aiSdk"]["last"] == "[DONE]"
    assert "You said: hello from the page" in protocols["aiSdk"]["text"]
    assert protocols["agUi"] == {"status": 200, "first": "RUN_STARTED", "last": "RUN_FINISHED"}
    assert out["created"] == 201
    assert out["request_id"]  # an exposed header the page can read
    assert (out["uploaded"], out["read_back"]) == (201, "written in a browser")
    assert out["started"] == 202
    assert out["stream_type"].startswith("text/event-stream")
    assert out["ids_follow_on"], out["resumed_after"]
    assert out["cancelled"] == 202
    assert out["ended"] == "run.cancelled"
    assert out["not_mine"] == [404, "not_found"]
    assert out["administration"] == [403, "forbidden_for_user_token"]
    assert out["bad_token"] == [401, "invalid_token"]


async def test_the_console_opens_from_a_link_with_a_users_token(
    app: FastAPI, caller: Caller, browser: Any
) -> None:
    """A support link a product hands its user: that user's data only, no administration,
    and the token gone from the address bar the moment the page has it."""
    async with serve_started(app) as atelier:
        async with httpx.AsyncClient(base_url=atelier, timeout=30) as http:
            for user, title in (("alice", "Alice's notes"), ("bob", "Bob's secrets")):
                made = await http.post(
                    "/v1/conversations", json={"title": title}, headers=caller.headers(user)
                )
                assert made.status_code == 201
            minted = await http.post(
                "/v1/user-tokens", json={"user_id": "alice"}, headers=caller.headers(None)
            )
        token = minted.json()["token"]
        page = await browser.new_page()
        failures: list[str] = []
        page.on("pageerror", lambda error: failures.append(str(error)))
        page.on(
            "response",
            lambda response: (
                failures.append(f"{response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )
        await page.goto(f"{atelier}/console/#token={token}")
        await page.wait_for_selector("text=Alice's notes")
        assert token not in page.url
        assert "Bob's secrets" not in await page.content()
        assert await page.is_hidden("#nav a[href='#/usage']")
        assert await page.is_visible("#nav a[href='#/conversations']")
        assert (await page.text_content("#who")) == "alice"
        await page.close()
    assert failures == []
