"""Run the real app under a real uvicorn server on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from edge_runtime.config import Settings, load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import build_services
from edge_runtime.server import GracefulServer, create_app, server_config
from tests.conftest import wait_for


def make_app(predictor: Predictor, token: str | None = None, **overrides: object) -> FastAPI:
    """The app `serve` would build from these settings, over an already loaded predictor."""
    settings = load_settings(env={}, overrides=overrides)
    env = {"EDGE_RUNTIME_TOKEN": token} if token else {}
    return create_app(build_services(settings, predictor=predictor, env=env))


@contextmanager
def running(app: FastAPI, settings: Settings | None = None) -> Iterator[str]:
    """With `settings`, uvicorn is set up as `serve` sets it up (connection limits included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1) \
        if settings is None else server_config(app, settings, log_level="warning", timeout_graceful_shutdown=1)
    server = GracefulServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve_process(model: Path, tmp_path: Path, nofile: int | None = None, **env: str) -> Iterator[Served]:
    """`edge-runtime serve MODEL` as a process of its own on a free loopback port, with a
    private TMPDIR and cache, its log in a file, and at most `nofile` open files."""
    port = free_port()
    log = tmp_path / "serve.log"
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full_env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    full_env.pop("EDGE_RUNTIME_TOKEN", None)

    def limit_files() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", str(model), "--port", str(port)],
                                env=full_env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit_files)
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        assert wait_for(lambda: healthz_ms(served.url) is not None, timeout=60), served.log_text()
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def healthz_ms(url: str, timeout: float = 2.0) -> float | None:
    began = time.monotonic()
    try:
        ok = httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return None
    return (time.monotonic() - began) * 1000 if ok else None


def answer(url: str, request: bytes, seconds: float = 5.0) -> tuple[int | None, bytes]:
    """Send `request` and keep the connection open, sending nothing more; return the status
    and the answer the server gives within `seconds` (None: no answer)."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        s.sendall(request)
        data, deadline = b"", time.monotonic() + seconds
        while not _whole(data) and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return (int(match.group(1)) if match else None), data


def _whole(data: bytes) -> bool:
    """Whether `data` holds a whole answer: its headers and the body they declare."""
    headers, sep, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", headers)
    return bool(sep) and len(body) >= (int(length.group(1)) if length else 0)
