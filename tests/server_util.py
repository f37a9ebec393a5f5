"""Run the real app under a real uvicorn server on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from edge_runtime.config import Settings, load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import build_services
from edge_runtime.server import GracefulServer, create_app, server_config


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
