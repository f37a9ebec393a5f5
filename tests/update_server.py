"""A real HTTP server on loopback that serves a model description and an export, and
misbehaves on request: cuts a download half-way, ignores Range, sends too much, drips."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that a deadline cut, or a kill -9: expected here


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes written


@dataclass
class Behaviour:
    cut_after: int | None = None  # the next download sends this many bytes, then drops the link (once)
    stall_after: int | None = None  # sends this many bytes, then holds the connection open (kill -9 tests)
    ignore_range: bool = False  # answers every download with a 200 and the whole file
    extra: bytes = b""  # appended to the file beyond what Content-Length says
    drip_s: float | None = None  # one byte every drip_s seconds
    etag: bool = True
    description: bytes | None = None  # served as is instead of the real description
    redirect: dict[str, str] = field(default_factory=dict)  # path -> Location
    range_answer: tuple[int, str] | None = None  # (status, Content-Range) to a Range request


class UpdateServer:
    """Serves /model.json (a description of `export`; any other *.json too), /model.zip and /model.zip.sig."""

    def __init__(self, export: bytes, name: str = "shelf", version: str = "1", signature: bytes | None = None,
                 **description: Any) -> None:
        self.export, self.signature = export, signature
        self.behaviour = Behaviour()
        self.seen: list[Seen] = []
        self.info = {"name": name, "version": version, "sha256": hashlib.sha256(export).hexdigest(),
                     "size": len(export), "url": "model.zip", **description}
        if signature is not None:
            self.info.setdefault("signatureUrl", "model.zip.sig")
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen = Seen(self.path, dict(self.headers))
                server.seen.append(seen)
                b = server.behaviour
                if self.path in b.redirect:
                    self._answer(seen, 302, b"", {"Location": b.redirect[self.path]})
                elif self.path.endswith(".json"):  # /model.json, and others to redirect to
                    body = b.description if b.description is not None else json.dumps(server.info).encode()
                    tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if b.etag and self.headers.get("If-None-Match") == tag:
                        self._answer(seen, 304, b"", {"ETag": tag})
                    else:
                        self._answer(seen, 200, body, {"ETag": tag} if b.etag else {})
                elif self.path == "/model.zip":
                    self._model(seen, b)
                elif self.path == "/model.zip.sig" and server.signature is not None:
                    self._answer(seen, 200, server.signature, {})
                else:
                    self._answer(seen, 404, b"not here", {})

            def _model(self, seen: Seen, b: Behaviour) -> None:
                data, start, status, headers = server.export, 0, 200, {}
                asked = self.headers.get("Range")
                if asked and b.range_answer is not None:
                    status, content_range = b.range_answer
                    if status == 416:
                        self._answer(seen, 416, b"", {"Content-Range": content_range})
                        return
                    headers["Content-Range"] = content_range
                    start = int(asked.split("=")[1].split("-")[0])
                elif asked and not b.ignore_range:
                    start = int(asked.split("=")[1].split("-")[0])
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                self.send_response(status)
                seen.status = status
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body) + len(b.extra)))
                self.end_headers()
                if b.cut_after is not None or b.stall_after is not None:
                    limit = b.cut_after if b.cut_after is not None else b.stall_after
                    assert limit is not None
                    self.wfile.write(body[:limit])
                    self.wfile.flush()
                    seen.sent = len(body[:limit])
                    if b.cut_after is not None:
                        b.cut_after = None
                        self.close_connection = True
                        return
                    time.sleep(120)
                    return
                if b.drip_s is not None:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        seen.sent += 1
                        time.sleep(b.drip_s)
                    return
                self.wfile.write(body + b.extra)
                seen.sent = len(body) + len(b.extra)

            def _answer(self, seen: Seen, status: int, body: bytes, headers: dict[str, str]) -> None:
                seen.status = status
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                seen.sent = len(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/model.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def downloads(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/model.zip"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
