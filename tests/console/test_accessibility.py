"""Accessibility of every view, checked by axe-core (served to the page from its npm
package, pinned by tests/js/package-lock.json: no CDN) at zero serious or critical
violations; the focus never falls back to <body> after sign-in, a new conversation or an
approval; a reply is announced once it is whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.console.test_console import Console, console, settings_overrides

__all__ = ["console", "settings_overrides"]

AXE = Path(__file__).parents[1] / "js" / "node_modules" / "axe-core" / "axe.min.js"


async def axe(console: Console, view: str) -> list[str]:
    """The serious and critical violations axe-core finds on the page as it is."""
    page = console.page
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        # From the console's own origin (its CSP allows no other script), read from npm.
        await page.route(
            "**/console/axe.min.js",
            lambda route: route.fulfill(
                body=AXE.read_bytes(), content_type="text/javascript; charset=utf-8"
            ),
        )
        await page.add_script_tag(url=f"{console.url}/console/axe.min.js")
    found: Any = await page.evaluate(
        """async () => (await axe.run(document, {
              runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice'] },
           })).violations.filter(v => ['serious', 'critical'].includes(v.impact))
              .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', '))"""
    )
    return [f"{view}: {violation}" for violation in found]


async def test_every_view_has_no_serious_or_critical_violation(console: Console) -> None:
    if not AXE.exists():
        raise AssertionError(f"{AXE} is missing: run `npm ci` in tests/js (make test does)")
    page = console.page
    await page.goto(f"{console.url}/console/")
    await page.wait_for_selector("#key")
    found = await axe(console, "sign-in")
    await console.careful_agent()
    await console.sign_in()
    found += await axe(console, "conversations")
    await console.new_conversation()
    await page.select_option("#agent", label="agent: careful")
    await console.ask("write a.txt: **bold** words")
    await page.wait_for_selector(".approval button.approve")
    found += await axe(console, "a run waiting for approval")
    await page.click(".approval button.approve")
    await console.run_ended()
    found += await axe(console, "a conversation")
    await page.click("#run-status .inspect")
    await page.wait_for_selector("#timeline li")
    found += await axe(console, "the run inspector")
    await page.keyboard.press("Escape")
    await page.click("nav a[href='#/chats']")
    await page.click("#new-chat")
    await console.ask("hello")
    await page.wait_for_selector("#messages .msg.assistant[data-message-id]")
    found += await axe(console, "a chat")
    await page.click("nav a[href='#/agents']")
    await page.click("#agent-list a")
    await page.wait_for_selector("#agent-versions")
    found += await axe(console, "an agent")
    await page.click("nav a[href='#/usage']")
    await page.wait_for_selector("#usage-totals")
    found += await axe(console, "usage")
    await page.click("nav a[href='#/admin']")
    await page.fill("#key-name", "ci")
    await page.click("#api-keys button[type='submit']")
    await page.wait_for_selector(".secret")
    found += await axe(console, "administration")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.click("nav a[href='#/conversations']")
    await page.wait_for_selector("#conversation-list li")
    found += await axe(console, "conversations on a phone")
    assert found == [], json.dumps(found, indent=2)


async def focused(console: Console) -> str:
    return str(
        await console.page.evaluate(
            "() => { const e = document.activeElement;"
            " return e === document.body || !e ? 'BODY' : e.tagName + '#' + e.id; }"
        )
    )


async def test_the_focus_never_falls_back_to_the_page(console: Console) -> None:
    """Defect 10: the focus went to <body> after sign-in, a new conversation, approve."""
    await console.careful_agent()
    await console.sign_in()
    # The view's heading: where it begins (set once the view is drawn).
    await console.page.wait_for_function("() => document.activeElement?.tagName === 'H1'")
    await console.new_conversation()
    await console.page.wait_for_function("() => document.activeElement?.id === 'composer'")
    await console.page.select_option("#agent", label="agent: careful")
    await console.ask("write a.txt: approved")
    await console.page.click(".approval button.approve")
    await console.page.wait_for_function(
        "() => document.activeElement?.matches('details.call[data-call-id]')",
        timeout=10_000,  # the run's next event, a moment after the click
    )
    await console.run_ended()
    assert await focused(console) != "BODY"
    # The reply, once whole, is announced (not each token as it streams).
    announced = await console.page.inner_text("#announcer")
    assert announced.startswith("The agent replied: Done.")


CONTRAST = """([selector, property]) => {
  const e = document.querySelector(selector);
  const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  let back = e.parentElement;
  while (back && getComputedStyle(back).backgroundColor === 'rgba(0, 0, 0, 0)') back = back.parentElement;
  const [a, b] = [lum(rgb(getComputedStyle(e)[property])), lum(rgb(getComputedStyle(back || document.body).backgroundColor))];
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


async def test_controls_and_the_focus_ring_stand_out(console: Console) -> None:
    """Defect 10 (WCAG 1.4.11, which axe-core does not check): input borders were 1.31:1
    and the focus ring 2.97:1 against what is behind them; 3:1 at least."""
    await console.sign_in()
    await console.new_conversation()
    border = await console.page.evaluate(CONTRAST, ["#composer", "borderTopColor"])
    assert border >= 3, border
    await console.page.focus("#composer")
    await console.page.keyboard.press("Shift+Tab")
    await console.page.keyboard.press("Tab")  # focused from the keyboard: :focus-visible
    ring = await console.page.evaluate(CONTRAST, ["#composer", "outlineColor"])
    assert ring >= 3, ring
