"""Defects of the console a team found living in it (issue: "the console a team keeps open
all day"), each proven in Chromium on both backends: a test per defect that failed on the
code before its fix."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from atelier.conversations.messages import Turn, seed
from atelier.conversations.models import Conversation
from atelier.llm.base import ModelRequest, Stop, StreamEvent, TextDelta
from atelier.llm.titles import TITLE_PROMPT
from atelier.tenants.service import revoke_api_key, verify_api_key
from tests.console.test_console import Console, console, settings_overrides, stored_messages

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


class LongReply:
    """A model that writes ``lines`` lines, one every ``pace`` seconds (a title request is
    answered at once)."""

    provider = "scripted"

    def __init__(self, lines: int, pace: float = 0.02) -> None:
        self.lines = lines
        self.pace = pace
        self.halfway = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if request.system == TITLE_PROMPT:
            yield TextDelta("A title")
        else:
            for n in range(self.lines):
                if n == self.lines // 2:
                    self.halfway.set()
                yield TextDelta(f"line {n}\n\n")
                await asyncio.sleep(self.pace)
        yield Stop("end_turn")


async def in_view(console: Console, selector: str) -> bool:
    """Whether the element's end is inside the viewport (not below the fold)."""
    return bool(
        await console.page.eval_on_selector(
            selector,
            "e => { const r = e.getBoundingClientRect();"
            " return r.bottom <= innerHeight + 1 && r.bottom > 0 && r.height > 0; }",
        )
    )


async def test_the_page_follows_a_streaming_reply_and_keeps_cancel_in_view(
    console: Console, app: FastAPI
) -> None:
    """Defect 2: with a long history the reply and Cancel streamed below the fold."""
    app.state.resources.models.providers["offline"] = model = LongReply(120, pace=0.03)
    await console.sign_in()
    conversation = await a_long_conversation(console, app, 40)
    await console.page.goto(f"{console.url}/console/#/conversations/{conversation}")
    await console.page.locator(".msg", has_text="answer 39").wait_for()
    await console.ask("tell me at length")
    await asyncio.wait_for(model.halfway.wait(), 30)
    await console.page.wait_for_function(
        "() => (document.querySelector('#live .msg.assistant')?.textContent || '')"
        ".includes('line 70')"
    )
    assert await in_view(console, "#cancel")
    assert await in_view(console, "#live .msg.assistant")
    await console.run_ended()
    assert await in_view(console, "#run-status")
    # Scrolled up to read while it streams, the reader is left where they are.
    await console.ask("and again")
    await console.page.wait_for_function(
        "() => (document.querySelectorAll('#live .msg.assistant')[0]?.textContent || '')"
        ".includes('line 5')"
    )
    await console.page.evaluate("() => window.scrollTo(0, 0)")
    await console.page.wait_for_function(
        "() => (document.querySelectorAll('#live .msg.assistant')[0]?.textContent || '')"
        ".includes('line 60')"
    )
    assert await console.page.evaluate("() => scrollY") < 400
    assert await in_view(console, "#cancel")  # the composer stays in view anyway
    await console.run_ended()


async def test_a_refused_chat_gives_its_text_back_and_names_the_budget(
    console: Console,
) -> None:
    """Defect 4: a chat turn refused for budget lost its text; notices named a UUID."""
    async with console.api() as api:
        spent = {"scope": "user", "subject": "alice", "period": "day", "limit": "0"}
        assert (await api.post("/v1/budgets", json=spent)).status_code == 201
    await console.sign_in()
    await console.page.click("nav a[href='#/chats']")
    await console.page.click("#new-chat")
    await console.page.wait_for_selector("#composer")
    console.expect_refusal = 402
    await console.ask("this costs money")
    notice = console.page.locator("#notice:not([hidden])")
    await notice.wait_for()
    said = await notice.inner_text()
    assert "the user budget of alice (0.00 USD a day) is spent" in said
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", said)  # no budget id
    assert await console.page.input_value("#composer") == "this costs money"
    assert await console.page.locator("#messages .msg").count() == 0
    await console.page.wait_for_timeout(6500)  # a failure stays until it is closed
    assert await notice.is_visible()
    await console.page.click("#notice .close")
    assert await console.page.is_hidden("#notice")


@pytest.mark.parametrize(
    "settings_overrides",
    [{"offline_model_delay_seconds": 0.02, "max_file_size": 1024 * 1024}],
)
async def test_an_upload_batch_goes_on_past_a_file_too_large(
    console: Console, tmp_path: Path
) -> None:
    """Defect 5: a batch stopped at its first failure, said sizes in bytes, and left the
    files before it unlisted until a reload."""
    await console.sign_in()
    await console.new_conversation()
    files = []
    for name, size in (("a.txt", 10), ("big.bin", 1024 * 1024 + 1), ("c.txt", 20)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        files.append(str(path))
    posted: list[int] = []
    console.page.on(
        "request",
        lambda r: (
            posted.append(len(r.post_data_buffer or b""))
            if r.method == "POST" and r.url.endswith("/files")
            else None
        ),
    )
    await console.page.set_input_files("#file-input", files)
    await console.page.wait_for_selector("#upload-report li[data-name='c.txt'] .sent")
    assert await console.page.locator("#files li").evaluate_all(
        "rows => rows.map(r => r.dataset.path)"
    ) == ["a.txt", "c.txt"]
    refused = await console.page.inner_text("#upload-report li[data-name='big.bin']")
    assert "over the 1 MiB limit" in refused
    assert len(posted) == 2  # the file too large was never sent
    assert max(posted) < 1024 * 1024
    assert "Uploaded 2 of 3 files" in await console.page.inner_text("#notice")


VIEWS = ("#/conversations", "#/chats", "#/agents", "#/usage", "#/admin")


async def test_phones_scroll_no_view_sideways(console: Console, app: FastAPI) -> None:
    """Defect 7: at 390 px every view was 566 px wide, the header did not wrap, the files
    fell below a long thread and the chart's labels were ~5 px."""
    await console.sign_in()
    conversation = await a_long_conversation(console, app, 30)
    async with console.api() as api:
        await api.patch(f"/v1/conversations/{conversation}", json={"title": "a-title-" + "x" * 120})
        run = await api.post(
            f"/v1/conversations/{conversation}/runs",
            json={"input": "write notes/" + "deep/" * 12 + "file.txt: hi"},
        )
        # Ended (its usage recorded) before the usage view is drawn: a busy machine may
        # otherwise draw it with no model to chart.
        path = f"/v1/conversations/{conversation}/runs/{run.json()['id']}"
        async with asyncio.timeout(30):
            while (await api.get(path)).json()["status"] in ("queued", "running"):
                await asyncio.sleep(0.05)
    await console.page.set_viewport_size({"width": 390, "height": 844})
    for view in (*VIEWS, f"#/conversations/{conversation}"):
        await console.page.goto(f"{console.url}/console/{view}")
        await console.page.wait_for_selector("#composer" if conversation in view else "main h1")
        await console.page.wait_for_load_state("networkidle")
        # Every view begins with a level-one heading (it had none on four).
        assert await console.page.locator("main h1").count() == 1, view
        wide = await console.page.evaluate("() => document.documentElement.scrollWidth")
        widest = await console.page.evaluate(
            "() => [...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > 391)"
            ".map(e => e.tagName + '.' + e.className + '#' + e.id).slice(-5)"
        )
        assert wide <= 390, f"{view} is {wide} px wide: {widest}"
        if view == "#/usage":
            await console.page.wait_for_selector("#usage-by-model text.axis")
            label = await console.page.eval_on_selector(
                "#usage-by-model text.axis", "e => e.getBoundingClientRect().height"
            )
            assert label >= 10, f"chart labels are {label} px high"
    files = await console.page.eval_on_selector(".files-pane", "e => e.getBoundingClientRect().top")
    thread = await console.page.eval_on_selector("#messages", "e => e.getBoundingClientRect().top")
    assert files < thread  # the files come first, not after the whole thread
    await console.screenshot("phone")


class MarkdownReply:
    """A model that answers with Markdown: a code block, a list, and HTML a reply must
    never run."""

    provider = "scripted"
    TEXT = (
        "Here is the **plan**:\n\n- one\n- two\n\n```python\nprint('hi')\n```\n\n"
        '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
        "[link](javascript:window.pwned=3)"
    )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta("A title" if request.system == TITLE_PROMPT else self.TEXT)
        yield Stop("end_turn")


async def run_shape(console: Console) -> list[str]:
    """What a run shows, element by element (the live one, else the last stored one)."""
    return list(
        await console.page.evaluate(
            """() => {
              const area = document.querySelector('#live .run-footer')
                ? document.querySelector('#live')
                : document.querySelector('#messages');
              const calls = [...area.querySelectorAll('details.call')].map(c =>
                'call ' + c.querySelector('summary').textContent.replace(/ \\d+ ms$/, '')
                + ' args=' + (c.querySelector('pre.arguments')?.textContent.length > 2)
                + ' result=' + !!c.querySelector('pre.result'));
              const texts = [...area.querySelectorAll('.msg.assistant .text')].map(t =>
                'text ' + t.innerHTML.length);
              const footers = [...area.querySelectorAll('.run-footer .words')].slice(-1)
                .map(f => 'footer ' + f.textContent);
              return [...calls, ...texts, ...footers];
            }"""
        )
    )


async def test_a_run_looks_the_same_live_and_after_a_reload(console: Console) -> None:
    """Defect 8: after a reload the status line and tokens were gone, approvals no longer
    said approved, tool calls never showed their arguments; no timestamps; no Markdown."""
    await console.careful_agent()
    await console.sign_in()
    await console.new_conversation()
    await console.page.select_option("#agent", label="agent: careful")
    await console.ask("write a.txt: approved")
    await console.page.click(".approval button.approve")
    await console.run_ended()
    live = await run_shape(console)
    assert any(
        "approved" in line and "args=true" in line and "result=true" in line for line in live
    )
    assert any(line.startswith("footer Run completed") and "tokens" in line for line in live)
    await console.page.reload()
    await console.page.wait_for_selector("#messages .run-footer")
    assert await run_shape(console) == live
    assert await console.page.locator("#messages time.stamp").count() >= 2


async def test_replies_are_markdown_sanitised(console: Console, app: FastAPI) -> None:
    app.state.resources.models.providers["offline"] = MarkdownReply()
    await console.sign_in()
    await console.new_conversation()
    await console.ask("show me")
    await console.run_ended()
    reply = console.page.locator("#live .msg.assistant .text")
    assert await reply.locator("strong").inner_text() == "plan"
    assert await reply.locator("li").count() == 2
    assert (await reply.locator("pre.code code").inner_text()).strip() == "print('hi')"
    assert await reply.locator("pre.code button.copy").count() == 1
    assert await reply.locator("img, script").count() == 0
    assert "<script>window.pwned=2</script>" in await reply.inner_text()  # shown as text
    href = await reply.locator("a").get_attribute("href")
    assert href is None or not href.startswith("javascript:")
    await console.page.reload()
    await console.page.wait_for_selector("#messages .msg.assistant pre.code")
    assert await console.page.evaluate("() => window.pwned === undefined")


async def test_conversations_are_searched_and_paged(console: Console) -> None:
    """Defect 9: 100 conversations at most, no paging or search."""
    async with console.api() as api:
        for n in range(60):
            await api.post("/v1/conversations", json={"title": f"topic {n:03d}"})
        await api.post("/v1/conversations", json={"title": "the needle"})
    await console.sign_in()
    rows = console.page.locator("#conversation-list li")
    await console.page.wait_for_selector("#more-conversation")
    assert await rows.count() == 50
    await console.page.click("#more-conversation")
    await console.page.wait_for_function(
        "() => document.querySelectorAll('#conversation-list li').length === 61"
    )
    assert await console.page.is_hidden("#more-conversation")
    await console.page.fill("#conversation-search", "NEEDLE")
    await console.page.wait_for_function(
        "() => document.querySelectorAll('#conversation-list li').length === 1"
    )
    assert await rows.inner_text() == "the needle"


async def test_a_runs_file_changes_redraw_their_rows_only(console: Console) -> None:
    """Defect 9: each file.changed listed the whole workspace again."""
    await console.sign_in()
    conversation = await console.new_conversation()
    async with console.api() as api:
        for n in range(20):
            await api.put(f"/v1/conversations/{conversation}/files/f{n:02d}.txt", content=b"x")
    await console.page.reload()
    await console.page.wait_for_selector("#files li[data-path='f19.txt']")
    listed: list[str] = []
    console.page.on(
        "request",
        lambda r: listed.append(r.url) if r.method == "GET" and r.url.endswith("/files") else None,
    )
    await console.ask("write new.txt: hi")
    await console.page.wait_for_selector("#files li[data-path='new.txt']")
    await console.run_ended()
    assert listed == []  # drawn from the event, not by listing the workspace again
    assert await console.page.locator("#files li").count() == 21


async def test_regenerate_fork_and_edit_and_resend(console: Console) -> None:
    await console.sign_in()
    conversation = await console.new_conversation()
    await console.ask("first question")
    await console.run_ended()
    await console.ask("second question")
    await console.run_ended()
    await console.page.reload()
    await console.page.wait_for_selector("#messages .run-footer .regenerate")
    await console.page.locator("#messages .run-footer .regenerate").last.click()
    await console.run_ended()
    stored = await stored_messages(console, conversation)
    assert [m["superseded"] for m in stored if m["role"] == "assistant"] == [False, True, False]
    # Fork from the first run: a new conversation holding that run only.
    await console.page.reload()
    await console.page.wait_for_selector("#messages .run-footer .fork")
    await console.page.locator("#messages .run-footer .fork").first.click()
    await console.page.wait_for_function(f"() => !location.hash.includes('{conversation}')")
    forked = console.page.url.rsplit("/", 1)[1]
    await console.page.wait_for_selector("#messages .msg.user")
    assert [
        m["content"] for m in await stored_messages(console, forked) if m["role"] == "user"
    ] == ["first question"]
    # Edit and resend the question: a fork before it, asked in the new words.
    console.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("reworded")))
    await console.page.locator("#messages .msg.user .edit").first.click()
    await console.page.wait_for_function(f"() => !location.hash.includes('{forked}')")
    await console.run_ended()
    edited = console.page.url.rsplit("/", 1)[1]
    asked = [m["content"] for m in await stored_messages(console, edited) if m["role"] == "user"]
    assert asked == ["reworded"]


async def test_the_run_inspector_shows_each_step_live_and_after(console: Console) -> None:
    await console.careful_agent()
    await console.sign_in()
    await console.new_conversation()
    await console.page.select_option("#agent", label="agent: careful")
    await console.ask("write report.md: # Findings")
    await console.page.wait_for_selector(".approval button.approve")
    await console.page.click("#run-status .inspect")
    steps = console.page.locator("#timeline > li")
    await console.page.wait_for_selector("#timeline li[data-decision='pending']")
    assert await console.page.evaluate("() => document.activeElement?.id") == "close-inspector"
    await console.page.click(".approval button.approve")
    # Live: the open inspector is drawn again as the run goes on.
    await console.page.wait_for_selector("#inspected-status[data-state='completed']")
    kinds = await steps.evaluate_all("items => items.map(i => i.dataset.type)")
    assert kinds == ["model_call", "approval", "tool_call", "model_call"]
    model_call = await steps.nth(0).inner_text()
    assert "tokens" in model_call
    assert "first token" in model_call
    assert "took" in model_call
    assert "approved by alice" in await steps.nth(1).inner_text()
    tool = steps.nth(2)
    assert "Tool call: write_file" in await tool.inner_text()
    await tool.locator("summary", has_text="Arguments").click()
    assert "report.md" in await tool.locator("pre").first.inner_text()
    assert "report.md (created)" in await console.page.inner_text("#inspector")
    await console.screenshot("inspector")
    await console.page.keyboard.press("Escape")
    assert await console.page.locator("#inspector").count() == 0
    # The same timeline from history, after a reload.
    await console.page.reload()
    await console.page.locator("#messages .run-footer .inspect").last.click()
    await console.page.wait_for_selector("#inspected-status[data-state='completed']")
    assert await steps.evaluate_all("items => items.map(i => i.dataset.type)") == kinds


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "offline_model_delay_seconds": 0.02,
            "mcp_allow_private": True,
            "webhook_allow_private": True,
        }
    ],
)
async def test_administration_budgets_webhooks_keys_and_mcp_servers(
    console: Console, app: FastAPI
) -> None:
    from tests.agents.mcp_server import McpServerProcess
    from tests.webhooks.receiver import receiving

    await console.sign_in()
    await console.page.click("nav a[href='#/admin']")
    await console.page.wait_for_selector("#budgets")
    # A budget: added, shown with what is spent, deleted.
    await console.page.select_option("#budget-scope", "user")
    await console.page.fill("#budget-subject", "alice")
    await console.page.fill("#budget-limit", "5")
    await console.page.click("#budgets button[type='submit']")
    row = console.page.locator("#budgets tbody tr")
    await row.wait_for()
    assert "alice" in await row.inner_text()
    assert "5" in await row.inner_text()
    # An API key: issued (its secret shown once, and it works), then revoked.
    await console.page.fill("#key-name", "ci")
    await console.page.click("#api-keys button[type='submit']")
    secret = await console.page.locator(".secret code").inner_text()
    async with httpx.AsyncClient(base_url=console.url) as http:
        works = await http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert works.status_code == 200
        console.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await console.page.click("#api-keys button[aria-label='Revoke ci']")
        await console.page.wait_for_selector("#api-keys li.revoked")
        app.state.resources.key_cache.clear()
        gone = await http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert gone.status_code == 401
    # A webhook: added, a run delivered to it, its deliveries listed, one sent again.
    async with receiving() as receiver:
        await console.page.fill("#webhook-url", receiver.url)
        await console.page.click("#webhooks button[type='submit']")
        await console.page.wait_for_selector(".secret:has-text('signing secret')")
        async with console.api() as api:
            made = await api.post("/v1/conversations", json={})
            await api.post(
                f"/v1/conversations/{made.json()['id']}/runs",
                json={"input": "hi"},
                headers={"Accept": "text/event-stream"},
            )
        await receiver.wait_for(1)
        await console.page.click("#webhooks .deliveries-button")
        await console.page.wait_for_selector("#deliveries li[data-status='delivered']")
        await console.page.click("#deliveries .redeliver")
        await receiver.wait_for(2)
        assert (
            receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
        )
    await console.screenshot("administration")
    # An agent's MCP server: added by URL, tested from the agent's page.
    with McpServerProcess() as crm:
        await console.page.click("nav a[href='#/agents']")
        await console.page.click("#agent-list a")
        await console.page.fill("#agent-mcp", f"crm {crm.url}")
        await console.page.click("#agent button[type='submit']")
        await console.page.wait_for_selector("#agent h2:has-text('version 2')")
        await console.page.click("button[aria-label='Test crm']")
        await console.page.wait_for_selector("#mcp-test .mcp-tools li")
        assert "find_customer" in await console.page.inner_text("#mcp-test")
    # The agent's versions, compared.
    await console.page.locator("#agent-versions button").first.click()
    added = await console.page.locator("#version-diff .added").all_inner_texts()
    assert any('"name": "crm"' in line for line in added), added


async def test_chats_are_renamed_and_deleted(console: Console) -> None:
    await console.sign_in()
    await console.page.click("nav a[href='#/chats']")
    await console.page.click("#new-chat")
    await console.page.wait_for_selector("#composer")
    chat = console.page.url.rsplit("/", 1)[1]
    await console.page.fill("#title", "Trip ideas")
    await console.page.press("#title", "Tab")
    link = f"#chat-list a[href='#/chats/{chat}']"
    await console.page.wait_for_selector(f"{link}:has-text('Trip ideas')")
    console.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await console.page.click("#delete-chat")
    await console.page.wait_for_selector(link, state="detached")
    async with console.api() as api:
        assert (await api.get(f"/v1/chats/{chat}")).status_code == 404
