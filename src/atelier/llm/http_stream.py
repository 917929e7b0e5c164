"""Reading a provider's Server-Sent Events over httpx, and mapping transport failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from atelier.llm.base import ModelError


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(event, data)`` pairs; ``event`` is "message" when the server names none."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def loads(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ModelError(f"the provider sent malformed JSON: {data[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ModelError("the provider sent JSON that is not an object")
    return value


async def raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        body = (await response.aread())[:500].decode("utf-8", "replace")
        raise ModelError(f"the provider answered {response.status_code}: {body}")


def parse_arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"the model sent tool arguments that are not JSON: {raw[:200]!r}") from exc
    return value if isinstance(value, dict) else {"value": value}
