"""The event contract is spelled once, in code: docs/events.md and the OpenAPI schema list
exactly the members of the typed unions."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from atelier.runs.events import CHAT_EVENTS, RUN_EVENTS, ChatEvent, RunEvent

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def members(union: object) -> set[str]:
    (members_union, _) = typing.get_args(union)
    return {model.model_fields["type"].default for model in typing.get_args(members_union)}


def documented(section: str) -> set[str]:
    text = DOCS.read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z._]+)` \|", body, re.MULTILINE))


@pytest.mark.parametrize(
    ("section", "union"), [("Run events", RunEvent), ("Chat events", ChatEvent)]
)
def test_the_docs_list_exactly_the_union(section: str, union: object) -> None:
    assert documented(section) == members(union)


def test_the_openapi_schema_lists_exactly_the_unions(unstarted_app) -> None:
    schemas = unstarted_app.openapi()["components"]["schemas"]
    for name, union in (("RunEvent", RunEvent), ("ChatEvent", ChatEvent)):
        assert set(schemas[name]["discriminator"]["mapping"]) == members(union)
        for ref in schemas[name]["oneOf"]:
            assert ref["$ref"].rsplit("/", 1)[1] in schemas


def test_every_event_parses_back_from_what_is_sent() -> None:
    from atelier.runs.events import MessageDelta, RunCompleted

    for event in (MessageDelta(text="hi"), RunCompleted(run_id="r")):
        wire = f'{{"type": "{event.type}", {event.data[1:]}'
        assert RUN_EVENTS.validate_json(wire) == event
    assert CHAT_EVENTS.validate_json('{"type": "done"}').type == "done"
