import warnings

from fastapi import FastAPI

CONTRACT = {
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/v1/models"),
    ("get", "/v1/usage"),
    ("post", "/v1/conversations"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{conversation_id}"),
    ("patch", "/v1/conversations/{conversation_id}"),
    ("delete", "/v1/conversations/{conversation_id}"),
    ("put", "/v1/conversations/{conversation_id}/files/{path}"),
    ("post", "/v1/conversations/{conversation_id}/files"),
    ("get", "/v1/conversations/{conversation_id}/files"),
    ("get", "/v1/conversations/{conversation_id}/files/{path}"),
    ("head", "/v1/conversations/{conversation_id}/files/{path}"),
    ("delete", "/v1/conversations/{conversation_id}/files/{path}"),
    ("get", "/v1/conversations/{conversation_id}/workspace.zip"),
    ("post", "/v1/conversations/{conversation_id}/runs"),
    ("get", "/v1/conversations/{conversation_id}/runs"),
    ("get", "/v1/conversations/{conversation_id}/runs/{run_id}"),
    ("get", "/v1/conversations/{conversation_id}/runs/{run_id}/events"),
    ("post", "/v1/conversations/{conversation_id}/runs/{run_id}/cancel"),
    ("get", "/v1/conversations/{conversation_id}/messages"),
    ("post", "/v1/chats"),
    ("get", "/v1/chats"),
    ("get", "/v1/chats/{chat_id}"),
    ("patch", "/v1/chats/{chat_id}"),
    ("delete", "/v1/chats/{chat_id}"),
    ("post", "/v1/chats/{chat_id}/messages"),
    ("get", "/v1/chats/{chat_id}/messages"),
}


def test_the_schema_builds_cleanly_and_covers_the_contract(app: FastAPI) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. duplicate operation ids
        spec = app.openapi()
    operations = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert CONTRACT - operations == set()
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_error_is_documented_as_problem_json(app: FastAPI) -> None:
    """(Under /openai/ in OpenAI's own error shape, as its clients read errors.)"""
    spec = app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        kind = "application/json" if path.startswith("/openai/") else "application/problem+json"
        for operation in item.values():
            responses = operation["responses"]
            assert "default" in responses
            for status, response in responses.items():
                if status == "default" or status[0] in "45":
                    assert list(response["content"]) == [kind]
