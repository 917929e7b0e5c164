from atelier.llm.base import (
    ChatMessage,
    ModelRequest,
    Stop,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    UsageReport,
)
from atelier.llm.offline import OfflineModel

TOOLS = [
    ToolSpec(name, name, {"type": "object"})
    for name in ("list_files", "read_file", "write_file", "delete_file", "search_files")
]


async def run(request: ModelRequest) -> list[object]:
    return [event async for event in OfflineModel(delay_seconds=0).stream(request)]


async def test_plain_answer_streams_word_by_word_with_usage() -> None:
    events = await run(
        ModelRequest(model="offline", messages=[ChatMessage("user", "What is Atelier?")])
    )
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 10
    assert "".join(deltas).startswith("You said: What is Atelier?")
    usage = next(e for e in events if isinstance(e, UsageReport))
    assert usage.input_tokens
    assert usage.output_tokens
    assert events[-1] == Stop("end_turn")
    assert events == await run(
        ModelRequest(model="offline", messages=[ChatMessage("user", "What is Atelier?")])
    )


async def test_commands_become_real_tool_calls_when_tools_are_offered() -> None:
    cases = {
        "list files": ("list_files", {}),
        "read notes/a.txt": ("read_file", {"path": "notes/a.txt"}),
        "write out.md: # Hello\nworld": (
            "write_file",
            {"path": "out.md", "content": "# Hello\nworld"},
        ),
        "delete old.txt": ("delete_file", {"path": "old.txt"}),
        "search quarterly revenue": ("search_files", {"query": "quarterly revenue"}),
    }
    for text, (name, arguments) in cases.items():
        events = await run(
            ModelRequest(model="offline", messages=[ChatMessage("user", text)], tools=TOOLS)
        )
        (call,) = [e for e in events if isinstance(e, ToolCall)]
        assert (call.name, call.arguments) == (name, arguments), text
        assert events[-1] == Stop("tool_use")


async def test_without_tools_a_command_is_just_text() -> None:
    events = await run(ModelRequest(model="offline", messages=[ChatMessage("user", "list files")]))
    assert not any(isinstance(e, ToolCall) for e in events)


async def test_after_a_tool_result_it_reports_and_stops() -> None:
    history = [
        ChatMessage("user", "list files"),
        ChatMessage("assistant", tool_calls=(ToolCall("c1", "list_files", {}),)),
        ChatMessage("tool", tool_results=(ToolResult("c1", "a.txt\nb.txt"),)),
    ]
    events = await run(ModelRequest(model="offline", messages=history, tools=TOOLS))
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta))
        == "Done. The tool said:\na.txt\nb.txt"
    )


async def test_max_tokens_cuts_the_reply() -> None:
    events = await run(
        ModelRequest(model="offline", messages=[ChatMessage("user", "hello " * 50)], max_tokens=5)
    )
    assert events[-1] == Stop("max_tokens")
    assert next(e for e in events if isinstance(e, UsageReport)).output_tokens == 5


async def test_one_command_per_line_is_a_plan_called_one_step_at_a_time() -> None:
    asked = ChatMessage("user", "read notes.txt\nwrite todo.md: - milk\n- Kenji\nlist files")
    history = [asked]
    calls = []
    while True:
        events = await run(ModelRequest(model="offline", messages=history, tools=TOOLS))
        call = next((e for e in events if isinstance(e, ToolCall)), None)
        if call is None:
            break
        calls.append((call.name, call.arguments))
        history += [
            ChatMessage("assistant", tool_calls=(call,)),
            ChatMessage("tool", tool_results=(ToolResult(call.id, "ok"),)),
        ]
    assert calls == [
        ("read_file", {"path": "notes.txt"}),
        ("write_file", {"path": "todo.md", "content": "- milk\n- Kenji"}),
        ("list_files", {}),
    ]
    assert events[-1] == Stop("end_turn")


async def test_text_that_is_not_a_plan_is_one_command_or_none() -> None:
    prose = ChatMessage("user", "read this and tell me\nwhat you think")
    events = await run(ModelRequest(model="offline", messages=[prose], tools=TOOLS))
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["read_file"]
    chat = ChatMessage("user", "Hello there\nHow are you?")
    events = await run(ModelRequest(model="offline", messages=[chat], tools=TOOLS))
    assert not any(isinstance(e, ToolCall) for e in events)


async def test_call_names_any_offered_tool_with_json_arguments() -> None:
    crm = ToolSpec("crm__find_customer", "Find a customer", {"type": "object"})
    text = 'call crm__find_customer {"email": "ann@example.com", "limit": 2}\nlist files'
    first = await run(
        ModelRequest(model="offline", messages=[ChatMessage("user", text)], tools=[*TOOLS, crm])
    )
    (call,) = [e for e in first if isinstance(e, ToolCall)]
    assert (call.name, call.arguments) == (
        "crm__find_customer",
        {"email": "ann@example.com", "limit": 2},
    )
    # A tool it is not offered, or arguments that are not a JSON object, call nothing.
    for refused in ('call crm__find_customer {"email": 1}', "call list_files [1, 2]"):
        events = await run(
            ModelRequest(model="offline", messages=[ChatMessage("user", refused)], tools=TOOLS)
        )
        assert not any(isinstance(e, ToolCall) for e in events), refused
