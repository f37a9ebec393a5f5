"""Request bodies: none is read before the request is authenticated, and none past a cap.

A route reads its body with `read_capped(request, limit)`, after its auth dependency has
`admit`ted the request (server/auth.py, server/state.py). `BodyGuard`, round the whole app,
holds for whatever else would read a body (FastAPI parsing a body parameter, a route added
later):

- a body is not read, not one byte of it, before `admit`: the request is refused with 401,
  so a route that parses its body ahead of its token check fails at once, not under attack;
- at most `limit` bytes are read: a Content-Length over it is 413 before the first byte, and
  a chunked body is counted as it arrives and refused as soon as it passes the cap.

What a refused request still sends is discarded by uvicorn as it arrives, never kept, and
the connection's body deadline (server.body_timeout_s) bounds how long that goes on.

    app.add_middleware(BodyGuard, limit=4 << 20)
    data = await read_capped(request, 64 * 1024)   # in a route, after require_token
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import HttpError, PayloadTooLarge, Unauthorized, error_response, status_for

ADMITTED = "edge_runtime.body_admitted"  # a scope key: set once the request may be read
LONG_UPLOAD = "edge_runtime.long_upload"  # a scope key: (byte limit, seconds) of an admitted long upload
BEFORE_AUTH = "a valid bearer token is required before the request's body is read"


def admit(request: Request) -> None:
    """The request is authenticated (or needs no token): its body may now be read."""
    request.scope[ADMITTED] = True


def allow_long_upload(request: Request, limit: int, timeout_s: float) -> None:
    """An admitted upload that may be larger than the app's cap and take longer than the body
    deadline (a model over a slow link): BodyGuard caps it at `limit`, and the connection
    (connections.py) gives it `timeout_s` and never closes it to make room for another."""
    if not request.scope.get(ADMITTED):
        raise Unauthorized(BEFORE_AUTH)
    request.scope[LONG_UPLOAD] = (limit, timeout_s)


def declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to pass `limit` bytes."""
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyGuard:
    """ASGI middleware: no body read before `admit`, none past `limit` (see the module docstring).

    A refusal is answered here, whatever the app made of the error it raised (FastAPI turns
    any error while it parses a body into a 400), unless the app's answer had already begun.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = declared_length(headers)
        has_body = bool(declared) or "transfer-encoding" in headers
        received, started = 0, False
        refused: HttpError | None = None

        def check(size: int) -> None:
            nonlocal refused
            limit = scope[LONG_UPLOAD][0] if LONG_UPLOAD in scope else self.limit
            if has_body and not scope.get(ADMITTED):
                refused = Unauthorized(BEFORE_AUTH)
            elif size > limit:
                refused = PayloadTooLarge(f"the body is over the {limit}-byte limit")
            if refused is not None:
                raise refused

        async def guarded_receive() -> Message:
            nonlocal received
            check(max(received, declared or 0))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                check(received)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is None or started:  # after a refusal, the app's own answer is dropped
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refused is None or started:
                raise
        if refused is not None and not started:
            status, code = status_for(refused)
            await error_response(status, code, str(refused))(scope, receive, send)
