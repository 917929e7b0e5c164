"""Webhooks as clients write them and as they are shown (the secret: once)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atelier.http.outbound import http_url

EventType = Literal[
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.timed_out",
    "approval.requested",
    "budget.threshold",
    "budget.exceeded",
]
Events = Field(min_length=1, max_length=7)


def _distinct(events: list[str] | None) -> list[str] | None:
    return None if events is None else sorted(set(events))


def _url(value: str | None) -> str | None:
    return None if value is None else http_url(value, "a webhook's url")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: list[EventType] = Events
    enabled: bool = True

    _distinct = field_validator("events")(_distinct)
    _url = field_validator("url")(_url)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=7)
    enabled: bool | None = None

    _distinct = field_validator("events")(_distinct)
    _url = field_validator("url")(_url)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[EventType]
    enabled: bool
    secret_rotated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    # Shown once (when it is made or rotated): verify deliveries with it.
    secret: str


class WebhookList(BaseModel):
    data: list[WebhookOut]
    next_cursor: str | None = None


class DeliveryOut(BaseModel):
    id: uuid.UUID  # the event's: its webhook-id header is "msg_" and this in hex
    event_type: EventType
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None  # None: no answer (refused, timed out, unreachable)
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None  # while pending
    delivered_at: datetime | None
    created_at: datetime
    data: dict[str, Any]


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None = None
