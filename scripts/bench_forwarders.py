"""How fast a forwarder drains a backlog from the event store; prints a table for docs/benchmarks.md.

    python scripts/bench_forwarders.py [--items 1000]

A backlog of event-start items (the contract's event JSON, about 450 bytes each) is written
to a fresh store, then one forwarder sends it to a receiver on loopback and the time until
its cursor reaches the head is measured: a webhook to http.server answering 200, and MQTT
QoS 1 to a mosquitto child process (skipped when mosquitto is not installed). Each item is
one round trip plus one cursor write, as delivery is one at a time and in order.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_runtime import forwarders
from edge_runtime.config import load_settings
from edge_runtime.events.store import EventStore
from edge_runtime.model.bench import machine
from edge_runtime.serve import forwarding


def event(i: int) -> dict[str, Any]:
    eid = f"01JBENCH{i:018d}"
    return {"id": eid, "rule": "kiosk", "camera": "door", "tag": "cola", "start": "2026-11-28T07:00:00.000Z",
            "end": None, "peakProbability": 0.97, "peakAt": "2026-11-28T07:00:00.500Z", "frames": 42,
            "box": {"left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4},
            "snapshot": f"/api/events/{eid}/snapshot.jpg", "thumbnail": f"/api/events/{eid}/thumbnail.jpg",
            "clip": None, "device": "bench"}


def drain(folder: Path, items: int, forwarder: dict[str, Any]) -> float:
    store = EventStore.open(folder)
    for i in range(items):
        store.add_outbox("event-start", f"e{i}", event(i))
    settings = load_settings(overrides={"events": {"device": "bench"},
                                        "forwarders": [{"name": "bench", "poll_s": 0.01, **forwarder}]})
    started = time.perf_counter()
    running = forwarders.start_all(forwarding(settings), store)
    try:
        while store.cursor("bench") < store.outbox_head():
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        running.stop(5)
        store.close()


RECEIVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def webhook_receiver() -> tuple[subprocess.Popen[bytes], int]:
    """In a process of its own, as a real receiver is: sharing this one's GIL would slow both."""
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        receiver, port = webhook_receiver()
        secret = root / "secret"
        secret.write_text("bench")
        hook = {"type": "webhook", "url": f"http://127.0.0.1:{port}/", "secret_file": str(secret)}
        try:
            rows.append(("webhook (HMAC-signed POST)", drain(root / "w", args.items, hook)))
        finally:
            receiver.terminate()
            receiver.wait(10)
        if shutil.which("mosquitto"):
            proc, port = mosquitto(root)
            try:
                rows.append(("MQTT QoS 1 (wait for PUBACK)",
                             drain(root / "m", args.items, {"type": "mqtt", "host": "127.0.0.1", "port": port})))
            finally:
                proc.terminate()
                proc.wait(10)
    print(f"Machine: {machine()}\n")
    print("| forwarder to loopback | items | seconds | items/s | ms per item |\n|---|---:|---:|---:|---:|")
    for name, took in rows:
        print(f"| {name} | {args.items} | {took:.2f} | {args.items / took:.0f} | {1000 * took / args.items:.2f} |")


if __name__ == "__main__":
    main()
