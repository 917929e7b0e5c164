from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from atelier.llm.context import ContextStatus
from atelier.usage.money import money_str

MAX_METADATA_BYTES = 16 * 1024
# PostgreSQL text cannot hold NUL: refused here, so both backends accept the same input.
NO_NUL = r"^[^\x00]*$"
ModelId = Field(
    default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
)


class ConversationWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=500, pattern=NO_NUL)
    model_id: str | None = ModelId
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class AgentConversationWrite(ConversationWrite):
    """A conversation also names its agent (else the tenant's default) and may pin one of
    its versions (else each run uses the latest)."""

    agent_id: uuid.UUID | None = None
    agent_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ForkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The last message the copy keeps (0: none); by default, all of them.
    at_seq: int | None = Field(default=None, ge=0, le=2**53)


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str | None
    model_id: str | None
    agent_id: uuid.UUID | None = None
    agent_version: int | None = None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    active_run_id: uuid.UUID | None
    total_input_tokens: int
    total_output_tokens: int
    total_cost: Decimal
    estimated_context_tokens: int
    context_window: int | None
    context_usage_percent: float | None
    context_status: ContextStatus

    @field_serializer("total_cost")
    def _money(self, value: Decimal) -> str:
        return money_str(value)


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    next_cursor: str | None
