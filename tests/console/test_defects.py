"""Defects of the console a team found living in it (issue: "the console a team keeps open
all day"), each proven in Chromium on both backends: a test per defect that failed on the
code before its fix."""

from __future__ import annotations

import uuid

from fastapi import FastAPI

from atelier.conversations.messages import Turn, seed
from atelier.conversations.models import Conversation
from atelier.tenants.service import revoke_api_key, verify_api_key
from tests.console.test_console import Console, console, settings_overrides

__all__ = ["console", "settings_overrides"]


async def a_long_conversation(console: Console, app: FastAPI, turns: int) -> str:
    """A conversation of ``turns`` questions and answers, written as stored history."""
    async with console.api() as api:
        made = await api.post("/v1/conversations", json={"title": "long"})
    conversation_id = made.json()["id"]
    async with app.state.resources.sessionmaker() as session:
        conversation = await session.get(Conversation, uuid.UUID(conversation_id))
        said = []
        for n in range(turns):
            said += [Turn("user", f"question {n}"), Turn("assistant", f"answer {n}")]
        await seed(session, conversation, said)
        await session.commit()
    return str(conversation_id)


async def test_a_long_conversation_opens_at_its_newest_message_and_loads_older_ones(
    console: Console, app: FastAPI
) -> None:
    """Defect 1: a conversation of 552 messages showed its oldest 500."""
    await console.sign_in()
    conversation = await a_long_conversation(console, app, 276)
    await console.page.goto(f"{console.url}/console/#/conversations/{conversation}")
    newest = console.page.locator(".msg", has_text="answer 275")
    await newest.wait_for()
    assert await newest.is_visible()  # opened scrolled to the end
    assert await console.page.locator(".msg", has_text="question 0").count() == 0
    await console.page.click("#load-older")
    await console.page.locator(".msg", has_text="question 200").wait_for()
    while await console.page.locator("#load-older").count():
        await console.page.click("#load-older")
        await console.page.wait_for_timeout(50)
    await console.page.locator(".msg", has_text="question 0").wait_for()
    assert await console.page.locator(".msg").count() == 552


async def test_a_refusal_shows_the_apis_field_errors(console: Console) -> None:
    """Defect 6: a 422 said only "the request is not valid"."""
    await console.sign_in()
    await console.new_conversation()
    console.expect_refusal = 422
    await console.page.fill("#title", "x" * 600)
    await console.page.press("#title", "Enter")
    notice = console.page.locator("#notice")
    await notice.wait_for()
    text = await notice.text_content() or ""
    assert "title" in text, text
    assert "500 characters" in text, text


async def test_a_revoked_key_goes_back_to_sign_in_and_the_nav_hides(
    console: Console, app: FastAPI
) -> None:
    """Defect 9: a revoked key left an empty view; the nav showed while signed out."""
    await console.sign_in()
    assert await console.page.is_visible("#nav")
    async with app.state.resources.sessionmaker() as session:
        key = await verify_api_key(session, console.caller.key)
        assert key is not None
        await revoke_api_key(session, key.key_id)
        await session.commit()
    app.state.resources.key_cache.clear()
    console.expect_refusal = 401
    await console.page.click("#nav a[href='#/chats']")
    await console.page.wait_for_selector("#key")
    assert await console.page.is_hidden("#nav")
    assert await console.page.is_hidden("#sign-out")
    notice = await console.page.locator("#notice").text_content()
    assert "sign in" in (notice or "").lower()
