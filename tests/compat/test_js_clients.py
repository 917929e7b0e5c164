"""The JavaScript clients teams use, unmodified, under node, over a real socket: the
LangGraph JS SDK (useStream's client), the openai npm package and the AI SDK. Each script
in tests/js asserts what it needs and exits non-zero on the first thing that breaks.
Their packages are pinned by tests/js/package-lock.json (installed by `make test`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.compat.test_langgraph_sdk import careful
from tests.conftest import Caller

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
MISSING = None if NODE and (JS / "node_modules").is_dir() else "node or tests/js/node_modules"
if MISSING and os.environ.get("ATELIER_REQUIRE_SERVICES") == "1":
    raise RuntimeError(f"{MISSING} missing: `make test` installs them (npm ci)")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING} missing")


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"offline_model_delay_seconds": 0.001}


async def node(script: str, served: str, caller: Caller, key: str | None = None) -> str:
    assert NODE is not None
    done = await asyncio.create_subprocess_exec(
        NODE,
        str(JS / script),
        served,
        key or caller.key,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 120)
    assert done.returncode == 0, f"{script}:\n{out.decode()[-2000:]}\n{err.decode()[-4000:]}"
    return out.decode()


async def test_the_langgraph_js_sdk(served: str, caller: Caller, native: httpx.AsyncClient) -> None:
    await careful(native, caller)
    assert '"ok":true' in await node("langgraph.mjs", served, caller)


async def test_the_openai_npm_package(served: str, caller: Caller) -> None:
    assert '"ok":true' in await node("openai.mjs", served, caller)


async def test_the_ai_sdk(served: str, caller: Caller) -> None:
    assert '"ok":true' in await node("ai_sdk.mjs", served, caller)


async def test_the_sdks_with_an_end_users_token(served: str, caller: Caller) -> None:
    """docs/api.md's browser example: a token, no secret key and no X-User-ID."""
    async with httpx.AsyncClient(base_url=served) as http:
        minted = await http.post(
            "/v1/user-tokens", json={"user_id": "js-token-user"}, headers=caller.headers(None)
        )
        token = minted.json()["token"]
        assert '"ok":true' in await node("user_token.mjs", served, caller, token)
        threads = await http.post(
            "/langgraph/threads/search", json={}, headers=caller.headers("js-token-user")
        )
    assert len(threads.json()) == 3  # the SDK's thread and two responses: all this user's


async def test_the_ai_sdk_ui_transport_and_stream_reader(served: str, caller: Caller) -> None:
    """useChat's wire: DefaultChatTransport and readUIMessageStream, every case."""
    assert '"ok":true' in await node("ai_sdk_ui.mjs", served, caller)


async def test_the_ag_ui_http_agent(served: str, caller: Caller) -> None:
    assert '"ok":true' in await node("ag_ui.mjs", served, caller)
