"""The event stream wire format: every line break in data starts a new `data:` line
(CR, LF and CRLF, and nothing else, as the SSE spec says), so no event can end early or
smuggle in a field."""

from __future__ import annotations

import json

from atelier.http.sse import EventBatch, ServerSentEvent


def test_json_data_is_one_data_line() -> None:
    data = json.dumps({"text": "two\nlines \u2028 and a \r return"})
    assert ServerSentEvent(data, "message.delta", 7).encode() == (
        f"id: 7\nevent: message.delta\ndata: {data}\n\n".encode()
    )


def test_each_line_break_starts_a_data_line() -> None:
    encoded = ServerSentEvent("a\r\nb\rc\nd\u2028e", "x", 1).encode()
    assert encoded == b"id: 1\nevent: x\ndata: a\ndata: b\ndata: c\ndata: d\xe2\x80\xa8e\n\n"


def test_injected_fields_stay_data() -> None:
    encoded = ServerSentEvent("ok\n\nevent: run.completed\nid: 99", "message.delta", 3).encode()
    assert encoded.count(b"\n\n") == 1  # still one event
    assert b"\ndata: event: run.completed\ndata: id: 99\n\n" in encoded


def test_empty_data_and_no_id_or_name() -> None:
    assert ServerSentEvent("").encode() == b"data: \n\n"


def test_a_batch_is_its_events_in_order() -> None:
    batch = EventBatch([ServerSentEvent("{}", "a", 1), ServerSentEvent("{}", "b", 2)])
    assert batch.encode() == b"id: 1\nevent: a\ndata: {}\n\nid: 2\nevent: b\ndata: {}\n\n"
