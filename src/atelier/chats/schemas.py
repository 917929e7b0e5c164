from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from atelier.conversations.schemas import NO_NUL, ConversationWrite, ModelId
from atelier.usage.money import money_str


class ChatWrite(ConversationWrite):
    pass


class ChatOut(BaseModel):
    id: uuid.UUID
    title: str | None
    model_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    total_input_tokens: int
    total_output_tokens: int
    total_cost: Decimal

    @field_serializer("total_cost")
    def _money(self, value: Decimal) -> str:
        return money_str(value)


class ChatPage(BaseModel):
    data: list[ChatOut]
    next_cursor: str | None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=200_000, pattern=NO_NUL)
    model_id: str | None = ModelId


class ChatMessageOut(BaseModel):
    id: uuid.UUID
    seq: int
    role: Literal["user", "assistant"]
    content: str
    model_id: str | None
    incomplete: bool
    stop_reason: str | None = None
    created_at: datetime


class ChatMessageList(BaseModel):
    data: list[ChatMessageOut]
