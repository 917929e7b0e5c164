"""The built-in offline model: deterministic, no network, no credentials.

It answers plainly from the input, word by word, and understands a few plain commands
by calling the workspace tools for real, so the agent path works offline:

    list files | read <path> | write <path>: <text> | delete <path> | search <text>
    call <TOOL_NAME> {json arguments}     (any tool it is offered: MCP, approvals, ...)

One command per line makes a plan: the commands are called one per step, in order.

Token counts are estimated (about four characters a token) and reported as usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from atelier.llm.base import (
    ChatMessage,
    ModelRequest,
    Stop,
    StreamEvent,
    TextDelta,
    ToolCall,
    UsageReport,
)

_WRITE = re.compile(r"^\s*write\s+(\S+?)\s*:\s*(.*)$", re.I | re.S)
_COMMANDS: tuple[
    tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, dict[str, Any]]]], ...
] = (
    (re.compile(r"^\s*list files\b", re.I), lambda m: ("list_files", {})),
    (re.compile(r"^\s*read\s+(\S+)", re.I), lambda m: ("read_file", {"path": m.group(1)})),
    (_WRITE, lambda m: ("write_file", {"path": m.group(1), "content": m.group(2)})),
    (re.compile(r"^\s*delete\s+(\S+)", re.I), lambda m: ("delete_file", {"path": m.group(1)})),
    (
        re.compile(r"^\s*search\s+(.+)$", re.I | re.S),
        lambda m: ("search_files", {"query": m.group(1).strip()}),
    ),
)


_CALL = re.compile(r"^\s*call\s+([A-Za-z0-9_.:-]+)\s*(\{.*\})?\s*$", re.I | re.S)


def _call(match: re.Match[str]) -> tuple[str, dict[str, Any]] | None:
    try:
        arguments = json.loads(match.group(2) or "{}")
    except json.JSONDecodeError:
        return None
    return (match.group(1), arguments) if isinstance(arguments, dict) else None


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def estimate_request(request: ModelRequest) -> int:
    """About how many tokens a request's prompt is: its instructions and messages."""
    return estimate_tokens(request.system) + sum(
        estimate_tokens(_text_of(message)) for message in request.messages
    )


class OfflineModel:
    provider = "offline"

    def __init__(self, delay_seconds: float = 0.005) -> None:
        self.delay = delay_seconds

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        prompt_tokens = estimate_request(request)
        last = request.messages[-1] if request.messages else ChatMessage("user", "")
        call = _next_command(request.messages, {t.name for t in request.tools})
        if call is not None:
            yield call
            yield UsageReport(
                input_tokens=prompt_tokens, output_tokens=estimate_tokens(str(call.arguments))
            )
            yield Stop("tool_use")
            return
        reply = _reply(last)
        budget = request.max_tokens
        produced = 0
        for piece in _pieces(reply):
            produced += estimate_tokens(piece)
            if produced > budget:
                yield UsageReport(input_tokens=prompt_tokens, output_tokens=budget)
                yield Stop("max_tokens")
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)
            yield TextDelta(piece)
        yield UsageReport(input_tokens=prompt_tokens, output_tokens=estimate_tokens(reply))
        yield Stop("end_turn")


def _pieces(text: str) -> Iterator[str]:
    """Word by word, each with its leading space, without holding them all at once."""
    start = 0
    while (end := text.find(" ", start + 1)) != -1:
        yield text[start:end]
        start = end
    yield text[start:]


def _text_of(message: ChatMessage) -> str:
    parts = [message.content]
    parts += [str(call.arguments) for call in message.tool_calls]
    parts += [result.content for result in message.tool_results]
    return " ".join(p for p in parts if p)


def _next_command(messages: list[ChatMessage], available: set[str]) -> ToolCall | None:
    """The plan's next command: the latest user message's commands, one per tool step."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            plan = _commands(messages[index].content, available) if available else []
            done = sum(1 for message in messages[index + 1 :] if message.role == "tool")
            return plan[done] if done < len(plan) else None
    return None


def _commands(text: str, available: set[str]) -> list[ToolCall]:
    """One command per line (a write's text may go on over the lines that follow it), or
    else the whole text as one command."""
    pieces: list[str] = []
    for line in text.splitlines():
        if _CALL.match(line) or any(pattern.match(line) for pattern, _ in _COMMANDS):
            pieces.append(line)
        elif pieces and _WRITE.match(pieces[-1]):
            pieces[-1] += "\n" + line
        elif line.strip():
            pieces = []
            break
    calls = [_command(piece, available, index) for index, piece in enumerate(pieces)]
    if calls and all(call is not None for call in calls):
        return calls  # type: ignore[return-value]
    single = _command(text, available, 0)
    return [single] if single is not None else []


def _command(text: str, available: set[str], index: int) -> ToolCall | None:
    found: list[tuple[str, dict[str, Any]] | None] = [
        build(match) for pattern, build in _COMMANDS if (match := pattern.match(text))
    ]
    if match := _CALL.match(text):
        found.insert(0, _call(match))
    for command in found:
        if command is not None:
            name, arguments = command
            if name in available:
                digest = hashlib.sha1(
                    f"{index}:{name}:{text}".encode(), usedforsecurity=False
                ).hexdigest()
                return ToolCall(id=f"call_{digest[:12]}", name=name, arguments=arguments)
    return None


def _reply(last: ChatMessage) -> str:
    if last.role == "tool" or last.tool_results:
        results = "\n".join(r.content for r in last.tool_results)
        return f"Done. The tool said:\n{results}" if results else "Done."
    text = " ".join(last.content.split())
    if not text:
        return "I am the offline model. Ask me something, or say 'list files'."
    return (
        f"You said: {text}. I am Atelier's offline model: I answer without a network, "
        "and I can list, read, write, delete and search files in this workspace."
    )
