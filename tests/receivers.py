"""What the forwarder tests share: the event and model-change payload schemas, a sample
event, and a real webhook receiver on loopback that fails its first POSTs on request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMA = json.loads((DOCS / "event-payload.schema.json").read_text())
MODEL_CHANGE_SCHEMA = json.loads((DOCS / "model-change.schema.json").read_text())


def event(event_id: str, camera: str = "door", end: str | None = None) -> dict[str, Any]:
    return {"id": event_id, "rule": "kiosk", "camera": camera, "tag": "cola", "start": "2026-11-28T07:00:00.000Z",
            "end": end, "peakProbability": 0.97, "peakAt": "2026-11-28T07:00:00.500Z", "frames": 42,
            "box": None, "snapshot": f"/api/events/{event_id}/snapshot.jpg",
            "thumbnail": f"/api/events/{event_id}/thumbnail.jpg", "clip": None, "device": "kiosk-3"}


class Receiver:
    """http.server on 127.0.0.1 that answers 500 to its first `failures` POSTs, each after `delay_s`."""

    def __init__(self, failures: int, delay_s: float = 0.0) -> None:
        self.failures, self.delay_s = failures, delay_s
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay_s)
                status = 500 if receiver.failures > 0 else 200
                receiver.failures -= status == 500
                if status == 200:
                    receiver.got.append((dict(self.headers), body))
                receiver.answers.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
