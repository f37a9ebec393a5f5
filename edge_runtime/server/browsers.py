"""Refuse what a hostile web page can make the operator's browser send.

- DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and reads the
  answers as its own. The Host header still says evil.example, so only the names this
  server is known by are accepted: loopback names when bound to loopback, or
  `server.allowed_hosts` (any name when that is empty and the bind is not loopback, where
  the token protects). /healthz and /readyz stay open to probes, whatever Host they send.
- Cross-site requests: a browser names the page that made a request in `Origin`. A request
  whose Origin is not this server's own (or is "null") is refused, so no other site can POST
  images or read results through the operator's browser.
- A request without a Host header (HTTP/1.0 allows that) matches no name, and its Origin,
  if it has one, cannot be this server's own: both checks refuse it as they would a foreign one.

    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts(settings.server))
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import ServerConfig, is_loopback, split_host_port
from .errors import Forbidden, error_response, status_for

PROBES = frozenset({"/healthz", "/readyz"})


def allowed_hosts(server: ServerConfig) -> frozenset[str] | None:
    """The Host names to accept, or None for any."""
    if server.allowed_hosts:
        return None if "*" in server.allowed_hosts else frozenset(server.allowed_hosts)
    if is_loopback(server.host):
        return frozenset({"localhost", "127.0.0.1", "::1"})
    return None


def _host_name(value: str) -> str | None:
    try:
        return split_host_port(value)[0]
    except ValueError:
        return None


def refusal(path: str, headers: Headers, allowed: frozenset[str] | None) -> str | None:
    """Why this request is refused, or None."""
    host = headers.get("host")
    if allowed is not None and path not in PROBES:
        name = None if host is None else _host_name(host)
        if name is None or (name not in allowed and not (is_loopback(name) and "127.0.0.1" in allowed)):
            return "this server does not answer to that Host name (set server.allowed_hosts)"
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, host):
        return "cross-site requests are refused"
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether `origin` names this server, as the Host header does ("null" never does)."""
    try:
        parts = urllib.parse.urlsplit(origin)
    except ValueError:  # such as an unclosed "[" in the address
        return False
    return host is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class BrowserGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app, self.allowed = app, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            why = refusal(scope["path"], Headers(scope=scope), self.allowed)
            if why is not None:
                status, code = status_for(Forbidden(why))
                await error_response(status, code, why)(scope, receive, send)
                return
        await self.app(scope, receive, send)
