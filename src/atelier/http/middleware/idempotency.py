"""``Idempotency-Key`` on every ``POST`` and ``PUT``: the same key with the same request
within 24 h gets the first answer again (``Idempotent-Replayed: true``) and does nothing
twice -- no second run, upload or row -- even when both arrive at once on two processes.
The same key with another request is ``422 idempotency_key_reused``.

A request is its method, path, query and end user, and its body (hashed as it streams
in). The first one with a key claims it in SQL and is answered as usual; its answer is
kept unless it says "try again" (5xx, 409, 429). One that comes while the first is still
being answered waits for that answer a little, then gets ``409 idempotency_key_in_use``.
An event stream is given again from the place its ``Location`` names (the run's events,
from the first).

Only the API key that made a request gets its answer again (another key of the tenant with
the same Idempotency-Key is ``422 idempotency_key_reused``); an answer carrying a secret is
kept sealed; an answer is deleted with the conversation (or chat, or run) it is about; a
tenant keeps at most ``ATELIER_MAX_IDEMPOTENCY_RECORDS`` answers (``409 limit_reached``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.agents.secrets import SecretsUnavailable
from atelier.http.errors import send_problem
from atelier.http.scope import principal
from atelier.idempotency.store import Answer, IdempotencyStore, Seen, TooManyKept

HEADER = b"idempotency-key"
_VISIBLE = re.compile(r"[\x21-\x7e]{1,255}")
REPLAYED = (b"idempotent-replayed", b"true")
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
MAX_KEPT_BODY = 1024 * 1024


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = principal(scope) if scope["type"] == "http" else None
        raw = _header(scope, HEADER) if scope["type"] == "http" else None
        if caller is None or raw is None or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        key = raw.decode("latin-1")
        if not _VISIBLE.fullmatch(key):
            await send_problem(
                send,
                400,
                "invalid_idempotency_key",
                "an Idempotency-Key is 1-255 visible ASCII characters (no spaces)",
            )
            return
        resources = scope["app"].state.resources
        store = IdempotencyStore(
            resources.sessionmaker, resources.sealer, resources.settings.max_idempotency_records
        )
        request = _fingerprint(scope, caller.user_id, caller.key_id)
        try:
            seen = await store.claim(caller.tenant_id, key, request)
        except SecretsUnavailable as exc:
            await _unopened(send, exc)
            return
        except TooManyKept:
            limit = resources.settings.max_idempotency_records
            await send_problem(
                send,
                409,
                "limit_reached",
                f"this tenant keeps at most {limit} idempotent answers"
                " (ATELIER_MAX_IDEMPOTENCY_RECORDS); retry without an Idempotency-Key,"
                " or once older ones expired",
                limit="idempotency_records",
            )
            return
        if seen is None:
            await _first(self.app, store, caller.tenant_id, key, scope, receive, send)
        else:
            await _again(
                self.app, store, caller.tenant_id, key, request, seen, scope, receive, send
            )


async def _unopened(send: Send, exc: SecretsUnavailable) -> None:
    """A kept answer sealed with keys this process does not have (see /ready)."""
    await send_problem(send, 503, "secrets_unavailable", str(exc), {"retry-after": "5"})


async def _first(
    app: ASGIApp,
    store: IdempotencyStore,
    tenant_id: uuid.UUID,
    key: str,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """This request is the key's: answer it, and keep the answer."""
    digest = hashlib.sha256()
    hashed = False
    start: Message | None = None
    body = bytearray()
    kept = False

    async def receiving() -> Message:
        nonlocal hashed
        message = await receive()
        if message["type"] == "http.request" and not hashed:
            digest.update(message.get("body", b""))
            if not message.get("more_body", False):
                hashed = True
                await store.body_received(tenant_id, key, digest.hexdigest())
        return message

    async def sending(message: Message) -> None:
        nonlocal start, kept
        if message["type"] == "http.response.start":
            start = message
            if _streamed(message) and _worth_keeping(message["status"]):
                await store.answered(tenant_id, key, _answer(message, b"", True, scope))
                kept = True
        elif message["type"] == "http.response.body" and not kept:
            if len(body) <= MAX_KEPT_BODY:
                body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                # Kept before the client has the whole answer: a retry the moment it does
                # is given it again, never a second execution.
                kept = await keep()
        await send(message)

    async def keep() -> bool:
        if (
            start is None
            or not hashed
            or not _worth_keeping(start["status"])
            or len(body) > MAX_KEPT_BODY
        ):
            return False
        try:
            await store.answered(tenant_id, key, _answer(start, bytes(body), False, scope))
        except SecretsUnavailable:  # a secret with no key to seal it: not kept at all
            return False
        return True

    try:
        await app(scope, receiving, sending)
    except BaseException:
        if not kept:
            await asyncio.shield(store.release(tenant_id, key))
        raise
    if not kept:
        # Nothing worth giving again (or the body was never read): the key is free.
        await store.release(tenant_id, key)


async def _again(
    app: ASGIApp,
    store: IdempotencyStore,
    tenant_id: uuid.UUID,
    key: str,
    request: str,
    seen: Seen,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """The key was used before: the same request gets the first answer again."""
    digest = hashlib.sha256()
    while True:  # the whole body, hashed (RequestLimitsMiddleware bounds it)
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left
        digest.update(message.get("body", b""))
        if not message.get("more_body", False):
            break
    loop = asyncio.get_running_loop()
    give_up = loop.time() + WAIT_SECONDS
    current: Seen | None = seen
    while current is not None and current.answer is None and loop.time() < give_up:
        if current.fingerprint != request:
            break
        await asyncio.sleep(POLL_SECONDS)
        try:
            current = await store.seen(tenant_id, key)
        except SecretsUnavailable as exc:
            await _unopened(send, exc)
            return
    if current is not None and (
        current.fingerprint != request
        or (current.body_hash is not None and current.body_hash != digest.hexdigest())
    ):
        await send_problem(
            send, 422, "idempotency_key_reused", "this Idempotency-Key was used for another request"
        )
        return
    if current is None or current.answer is None:
        await send_problem(
            send,
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being answered; retry shortly",
            {"retry-after": "1"},
        )
        return
    answer = current.answer
    if answer.streamed:
        await _stream_again(app, scope, receive, send, answer)
        return
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": [*headers, REPLAYED]}
    )
    await send({"type": "http.response.body", "body": answer.body})


# APIs whose Locations are relative to their own root, as their clients join them to a base
# URL that ends in it (the LangGraph SDK does).
ROOT_RELATIVE = ("/langgraph",)


async def _stream_again(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, answer: Answer
) -> None:
    """An event stream, given again from the start of what its Location names."""
    location = dict(answer.headers).get("location", "")
    path, _, query = location.partition("?")
    for root in ROOT_RELATIVE:
        if scope["path"].startswith(f"{root}/") and not path.startswith(f"{root}/"):
            path = root + path
    dropped = {b"content-type", b"content-length", HEADER, b"last-event-id"}
    again = {
        **scope,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k, v) for k, v in scope["headers"] if k not in dropped],
    }

    async def replayed(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), REPLAYED]}
        await send(message)

    await app(again, receive, replayed)


def _answer(start: Message, body: bytes, streamed: bool, scope: Scope) -> Answer:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    return Answer(start["status"], headers, body, streamed, _subject(scope["path"], body))


_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def _subject(path: str, body: bytes) -> uuid.UUID | None:
    """What the answer is about, so that it goes when that is deleted: the first id in the
    path (a conversation, chat or thread), else the id the answer gives what it made (a
    conversation, chat or thread; a response's run)."""
    found = _UUID.search(path)
    if found is None and body.startswith(b"{"):
        try:
            made = json.loads(body)
        except ValueError:
            made = None
        if isinstance(made, dict):
            for field in ("thread_id", "conversation_id", "id"):
                if isinstance(made.get(field), str) and (found := _UUID.search(made[field])):
                    break
    return uuid.UUID(found.group()) if found else None


def _worth_keeping(status: int) -> bool:
    """Answers that would not change if asked again; "try again" is not one of them."""
    return status < 500 and status not in (409, 429)


def _streamed(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name == b"content-type":
            return bool(value.startswith(b"text/event-stream"))
    return False


def _fingerprint(scope: Scope, user_id: str | None, key_id: uuid.UUID) -> str:
    parts = [
        scope["method"],
        scope["path"],
        scope.get("query_string", b"").decode("latin-1"),
        user_id or "",
        str(key_id),  # only the key that made it gets its answer again
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None
