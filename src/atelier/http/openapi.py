"""The OpenAPI schema says what errors really look like -- problem+json, for every status
(OpenAI's error shape under /openai/) -- and what the event streams carry.

FastAPI documents a 422 as ``application/json`` with its own validation-error shape;
Atelier answers every error with ``application/problem+json`` (``errors.py``). The
schema is made to match, so generated clients and schema-driven tests agree with the
server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

PROBLEM = {
    "type": "object",
    "title": "Problem",
    "description": "An error (RFC 9457). `code` is stable; branch on it, not on `detail`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}
PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Under /openai/ the same errors in OpenAI's shape (middleware/openai_errors.py).
OPENAI_ERROR = {
    "type": "object",
    "title": "OpenAIError",
    "description": "An error as OpenAI's clients read it; `code` is Atelier's stable code.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
OPENAI_ERROR_CONTENT = {
    "application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}
}


def document(app: FastAPI, events: dict[str, TypeAdapter[Any]]) -> None:
    """Errors as problem+json everywhere, and the event streams' unions (``events``, by
    schema name) under components, where the streaming responses refer to them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM
        schemas["OpenAIError"] = OPENAI_ERROR
        for name, adapter in events.items():
            union = adapter.json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(union.pop("$defs", {}))
            schemas[name] = union
        for path, item in schema.get("paths", {}).items():
            errors = OPENAI_ERROR_CONTENT if path.startswith("/openai/") else PROBLEM_CONTENT
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = errors
                responses["default"] = {"description": "An error", "content": errors}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
