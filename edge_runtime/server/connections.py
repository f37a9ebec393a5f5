"""Connection limits that uvicorn lacks: header and body deadlines, and a connection cap.

uvicorn's h11 protocol has no deadline for a request's headers or body (its keep-alive
timeout ends at the first byte), so a client that sends one byte every few seconds holds a
connection, and its file descriptor, forever. `guarded_protocol` returns uvicorn's h11
protocol with three additions:

- the request line and headers must arrive within `header_timeout_s` of the connection
  opening (or of the previous response ending);
- the whole body must arrive within `body_timeout_s` of the headers;
- at most `max_connections` stay open: a new one closes the oldest connection that is
  waiting on its client (idle, or still sending headers or a body), and is refused with 503
  only when every open connection is busy with a response, so a flood of slow clients
  cannot lock out /healthz;
- an upload its route admitted after the token check (body.allow_long_upload: a model
  sent over a slow link) has that route's deadline instead, and is never closed for room.

Late clients get a short 408 and the connection is closed.

    config = uvicorn.Config(app, http=guarded_protocol(ConnectionLimits(10, 60, 256)))
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .body import LONG_UPLOAD

log = logging.getLogger("edge_runtime.http")
FD_RESERVE = 128  # descriptors kept for models, cameras, logs and the accept() batch
ACCEPT_BACKLOG = 64  # asyncio accepts up to this many sockets before any of them is counted


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def _canned(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"code": reason.replace(" ", ""), "message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


TIMED_OUT = _canned(408, "Request Timeout", "the request was not sent in time")
BUSY = _canned(503, "Service Unavailable", "too many connections")


class GuardedH11Protocol(H11Protocol):
    limits: ConnectionLimits = ConnectionLimits(10.0, 60.0, 256)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._phase_since = 0.0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _track(self) -> None:
        """Start a deadline whenever the client owes us headers or a body."""
        if self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        upload = self._upload() if phase == "body" else None
        if upload is not None:
            phase = "upload"  # admitted by its route: its own deadline, and never evicted for room
        if phase == self._phase:
            return
        self._cancel()
        self._phase, self._phase_since = phase, time.monotonic()
        if phase is not None:
            timeout = (upload[1] if upload is not None else
                       self.limits.header_timeout_s if phase == "headers" else self.limits.body_timeout_s)
            self._deadline = self.loop.call_later(timeout, self._expire)

    def _upload(self) -> tuple[int, float] | None:
        """(limit, seconds) when the route admitted this request's body as a long upload."""
        upload = (self.scope or {}).get(LONG_UPLOAD) if self.cycle is not None else None
        return upload if isinstance(upload, tuple) else None

    def _expire(self) -> None:
        self._deadline = None
        upload = self._upload() if self._phase == "body" else None
        if upload is not None:  # admitted after the body deadline started: the upload's own, from the headers
            self._phase = "upload"
            left = upload[1] - (time.monotonic() - self._phase_since)
            if left > 0:
                self._deadline = self.loop.call_later(left, self._expire)
                return
        log.warning("closed a connection from %s: its request %s took too long", self._peer(), self._phase)
        self._close(TIMED_OUT)

    def _close(self, answer: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() now sees http.disconnect
            self.cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response begun on this connection
            self.transport.write(answer)
        self.transport.close()

    def _make_room(self) -> None:
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self
                and c._phase is not None and c._phase != "upload"
                and not (c._phase == "body" and c._upload() is not None)
                and not c.transport.is_closing()]
        if idle:
            oldest = min(idle, key=lambda c: c._phase_since)
            log.warning("at the %d-connection cap: closed the oldest one waiting on its client, from %s",
                        self.limits.max_connections, oldest._peer())
            oldest._close(TIMED_OUT)
        else:
            log.warning("at the %d-connection cap and every connection is busy: refused %s",
                        self.limits.max_connections, self._peer())
            self._close(BUSY)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol bound to these limits (pass it as uvicorn.Config(http=...))."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to fit the open-file limit (raised to its hard limit first where
    that helps), so accept() never runs out of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    cap = max(8, soft - FD_RESERVE)
    log.warning("server.max_connections lowered from %d to %d to fit the open-file limit (%d); "
                "raise it with LimitNOFILE= or ulimit -n", wanted, cap, soft)
    return cap
