"""Request bodies of the LangGraph API, as far as Atelier honours them. Fields a client
may send that change nothing here (``config``, ``context``, ``stream_resumable``, ...)
are accepted and ignored; fields that would change what a run does and that Atelier
cannot honour are refused (422), never silently dropped (docs/compat.md)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atelier.conversations.schemas import MAX_METADATA_BYTES, NO_NUL
from atelier.http.outbound import http_url
from atelier.llm.base import ToolSpec
from atelier.runs.schemas import MAX_CLIENT_TOOLS, MAX_INPUT_CHARS, ClientTool, client_tool_specs

if TYPE_CHECKING:
    from atelier.conversations.models import Conversation

StreamModes = list[str] | str | None
Metadata = dict[str, Any] | None


def _bounded(value: Metadata) -> Metadata:
    if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    thread_id: uuid.UUID | None = None
    metadata: Metadata = None
    if_exists: Literal["raise", "do_nothing"] = "raise"

    _metadata = field_validator("metadata")(_bounded)


class ThreadPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Metadata = None

    _metadata = field_validator("metadata")(_bounded)


class Search(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: Metadata = None
    graph_id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=64)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=100_000)


class StateAt(BaseModel):
    """``POST /threads/{id}/state/checkpoint``'s body (RemoteGraph's get_state)."""

    model_config = ConfigDict(extra="ignore")

    checkpoint: dict[str, Any] | None = None
    subgraphs: bool = False


class Command(BaseModel):
    """LangGraph's ``Command``: ``resume`` is honoured. Its other fields are accepted when
    they ask for nothing (RemoteGraph always sends ``"goto": []``); when they would change
    what runs, they are refused by name."""

    model_config = ConfigDict(extra="forbid")

    resume: Any = None
    goto: Any = None
    update: Any = None
    graph: Any = None

    @model_validator(mode="after")
    def _nothing_else(self) -> Command:
        asked = [name for name in ("goto", "update", "graph") if getattr(self, name)]
        if asked:
            raise ValueError(f"Command {', '.join(asked)} is not supported here; send resume")
        return self


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    assistant_id: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    input: dict[str, Any] | None = None
    command: Command | None = None
    stream_mode: StreamModes = None
    metadata: Metadata = None
    webhook: str | None = Field(default=None, min_length=1, max_length=2048)
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    if_not_exists: Literal["reject", "create"] = "reject"
    # The run's context: ``client_tools``, tools the caller runs (as /v1's client_tools):
    # a call to one interrupts the run, and a resume with its output takes it on.
    context: dict[str, Any] | None = None
    # What would change a run and has no meaning here: refused when given.
    interrupt_before: None = None
    interrupt_after: None = None
    checkpoint: None = None
    checkpoint_id: None = None
    after_seconds: None = None

    _metadata = field_validator("metadata")(_bounded)

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value, "webhook")

    @field_validator("context")
    @classmethod
    def _client_tools(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and "client_tools" in value:
            tools = [ClientTool.model_validate(tool) for tool in value["client_tools"] or []]
            if len(tools) > MAX_CLIENT_TOOLS:
                raise ValueError(f"at most {MAX_CLIENT_TOOLS} client tools")
            client_tool_specs(tools)
        return value

    def client_tools(self) -> tuple[ToolSpec, ...]:
        sent = (self.context or {}).get("client_tools") or []
        return client_tool_specs([ClientTool.model_validate(tool) for tool in sent])

    @model_validator(mode="after")
    def _input_or_command(self) -> RunCreate:
        if (self.input is None) == (self.command is None):
            raise ValueError("send either input or a command (resume)")
        return self

    def text(self) -> str:
        """The one human message of the input (a thread keeps the history)."""
        sent = (self.input or {}).get("messages")
        if isinstance(sent, dict):
            sent = [sent]
        if not isinstance(sent, list) or len(sent) != 1 or not isinstance(sent[0], dict):
            raise ValueError("input.messages must hold exactly one human message")
        message = sent[0]
        if (message.get("role") or message.get("type")) not in ("user", "human"):
            raise ValueError("input.messages must hold exactly one human message")
        content = message.get("content")
        if isinstance(content, list):  # content blocks: their text, in order
            content = "".join(
                block.get("text", "") if isinstance(block, dict) else str(block)
                for block in content
                if not isinstance(block, dict) or block.get("type") == "text"
            )
        if not isinstance(content, str) or not content.strip() or "\x00" in content:
            raise ValueError("the human message needs text (and no NUL)")
        if len(content) > MAX_INPUT_CHARS:
            raise ValueError(f"the message is longer than {MAX_INPUT_CHARS} characters")
        return content


class Thread(NamedTuple):
    """The conversation a thread is, and the id its user knows it by."""

    conversation_id: uuid.UUID
    thread_id: uuid.UUID

    @classmethod
    def of(cls, conversation: Conversation) -> Thread:
        return cls(conversation.id, conversation.thread_id or conversation.id)
