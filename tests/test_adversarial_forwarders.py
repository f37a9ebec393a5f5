"""The forwarders against hostile receivers and brokers, and the outbox against the ways rows
go missing, for real: raw sockets on loopback that drip bytes, answer 200 MB or say nothing,
fake MQTT brokers that never CONNACK or PUBACK, secret files that are not files, the
`edge-runtime serve` CLI refusing bad ones, and kill -9 around a serve without forwarders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import re
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from edge_runtime import forwarders
from edge_runtime.config import Settings, load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.events.store import DB_NAME, EventRecord, EventStore, new_id
from edge_runtime.forwarders.base import DeliveryError, Forwarder, read_secret
from edge_runtime.forwarders.config import DEFAULT_TTL_S
from edge_runtime.forwarders.memory import MemoryOutbox
from edge_runtime.forwarders.webhook import WebhookTransport
from edge_runtime.metrics import Metrics
from edge_runtime.serve import forwarding, janitor
from edge_runtime.service.backoff import Backoff
from tests.conftest import wait_for
from tests.receivers import Receiver, event
from tests.server_util import free_port

pytestmark = pytest.mark.timeout(60)
MB = 1 << 20


# --- raw receivers on loopback ---------------------------------------------------------------


class Raw:
    """A TCP server on 127.0.0.1 that hands each connection to `handle(sock, stop)`."""

    def __init__(self, handle: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.connections = 0
        raw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                raw.connections += 1
                with contextlib.suppress(OSError):
                    handle(self.request, raw.stop)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def raw() -> Iterator[Callable[..., Raw]]:
    made: list[Raw] = []

    def make(handle: Callable[[socket.socket, threading.Event], None]) -> Raw:
        made.append(Raw(handle))
        return made[-1]

    yield make
    for r in made:
        r.close()


def read_request(sock: socket.socket) -> None:
    """Read one HTTP request (headers and a Content-Length body) off the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return
        body += chunk


def drip(sock: socket.socket, stop: threading.Event, first: bytes, byte: bytes = b"x", every_s: float = 0.2) -> None:
    """Send `first`, then one byte every `every_s`: never a read timeout, never the end."""
    sock.sendall(first)
    while not stop.wait(every_s):
        sock.sendall(byte)


def drip_headers(sock: socket.socket, stop: threading.Event) -> None:
    read_request(sock)
    drip(sock, stop, b"HTTP/1.1 200 OK\r\nX-Slow: ")


def drip_body(sock: socket.socket, stop: threading.Event) -> None:
    read_request(sock)
    drip(sock, stop, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")


def drip_tls_handshake(sock: socket.socket, stop: threading.Event) -> None:
    sock.recv(65536)  # the ClientHello; then a handshake record that never ends
    drip(sock, stop, b"\x16\x03\x03\x40\x00", byte=b"\x00")


def send_in_thread(transport: WebhookTransport, limit_s: float) -> tuple[float, BaseException | None]:
    """(seconds the send took, what it raised); the test fails, rather than hangs, past limit_s."""
    box = MemoryOutbox()
    box.add_outbox("event-start", "e0", event("e0"))
    item = box.outbox_after(0)[0]
    outcome: list[BaseException | None] = []

    def go() -> None:
        try:
            transport.send(item, b"{}")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    began = time.monotonic()
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"the delivery was still running after {limit_s} s"
    return time.monotonic() - began, outcome[0]


@pytest.mark.parametrize("handler", [drip_headers, drip_body, drip_tls_handshake])
def test_a_receiver_that_drips_its_answer_fails_at_the_deadline(raw, handler):
    server = raw(handler)
    url = server.url.replace("http://", "https://") if handler is drip_tls_handshake else server.url
    transport = WebhookTransport(url, None, 1.0, requests.Session(), verify=False)
    try:
        took, error = send_in_thread(transport, limit_s=6)
    finally:
        transport.close()
    assert isinstance(error, DeliveryError)
    assert str(error) == f"POST {url}: no complete answer within 1 s"
    assert 0.9 < took < 3.0


def webhook_config(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "name": "hook", "url": url, "poll_s": 0.05,
            "backoff": {"initial_s": 0.05, "max_s": 0.1}, **extra}


def forwarder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("forwarder-") and t.is_alive()]


def test_a_stuck_delivery_is_a_failure_counted_retried_and_shown(raw, tmp_path):
    server = raw(drip_headers)
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "a", event("a"))
    metrics = Metrics()
    settings = load_settings(overrides={"forwarders": [webhook_config(server.url, timeout_s=0.5, ttl_s=2.0)]})
    running = forwarders.start_all(forwarding(settings), store, metrics.registry)
    try:
        assert wait_for(lambda: running.status()[0]["retried"] >= 2, timeout=10), running.status()
        status = running.status()[0]
        assert status["failingForS"] > 0 and status["delivered"] == 0 and status["queueDepth"] == 1
        assert status["lastError"] == f"POST {server.url}: no complete answer within 0.5 s"
        assert server.connections >= 2  # each retry is a new exchange
        failing = re.search(r'edge_forwarder_failing_seconds\{forwarder="hook"\} (\S+)', metrics.render().decode())
        assert failing is not None and float(failing.group(1)) > 0
        assert wait_for(lambda: not running.healthy, timeout=10)  # failing for longer than the TTL
    finally:
        running.stop(timeout=5)
        store.close()


def test_stopping_cuts_short_a_delivery_stuck_on_the_receiver(raw, tmp_path):
    server = raw(drip_headers)
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "a", event("a"))
    settings = load_settings(overrides={"forwarders": [webhook_config(server.url, timeout_s=60)]})
    before = set(forwarder_threads())
    running = forwarders.start_all(forwarding(settings), store)
    try:
        assert wait_for(lambda: server.connections == 1, timeout=5)
        time.sleep(0.3)  # the delivery is now inside the drip
        began = time.monotonic()
        running.stop(timeout=3)
        assert time.monotonic() - began < 2.0
        assert wait_for(lambda: set(forwarder_threads()) <= before, timeout=1)
    finally:
        running.stop(timeout=1)
        store.close()


class Huge:
    """A handler that answers `status` with a 200 MB body (or `body`, as it is), counting
    what it managed to write before the client hung up."""

    def __init__(self, status: bytes, first_line: bytes = b"", body: bytes | None = None,
                 headers: bytes = b"") -> None:
        self.status, self.first_line, self.body, self.headers = status, first_line, body, headers
        self.sent = 0

    def __call__(self, sock: socket.socket, stop: threading.Event) -> None:
        read_request(sock)
        size = 200 * MB if self.body is None else len(self.body)
        sock.sendall(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: " + str(size).encode() + b"\r\n"
                     + self.headers + b"\r\n")
        if self.body is not None:
            sock.sendall(self.body)
            self.sent += len(self.body)
            return
        chunk = self.first_line + b"\n" + b"y" * (65536 - len(self.first_line) - 1)
        while self.sent < size and not stop.is_set():
            sock.sendall(chunk)
            self.sent += len(chunk)
            chunk = b"z" * 65536


def test_a_200_mb_answer_is_not_read(raw):
    huge = Huge(b"200 OK")
    server = raw(huge)
    transport = WebhookTransport(server.url, None, 10.0, requests.Session())
    try:
        took, error = send_in_thread(transport, limit_s=10)
    finally:
        transport.close()
    assert error is None and took < 3.0
    time.sleep(0.2)
    assert huge.sent < 40 * MB  # what the kernel's buffers took, not the answer


def test_an_error_answer_shows_its_first_line_and_nothing_more(raw):
    huge = Huge(b"503 Service Unavailable", first_line=b"quota \x1b[31mexceeded")
    server = raw(huge)
    transport = WebhookTransport(server.url, None, 10.0, requests.Session())
    try:
        took, error = send_in_thread(transport, limit_s=10)
    finally:
        transport.close()
    assert isinstance(error, DeliveryError) and took < 3.0
    assert str(error) == f"POST {server.url}: HTTP 503: quota ?[31mexceeded"
    assert huge.sent < 40 * MB


def test_a_compressed_answer_is_never_inflated(raw):
    bomb = gzip.compress(b"\0" * (64 * MB))  # 64 MB of zeros in about 64 KB
    server = raw(Huge(b"200 OK", body=bomb, headers=b"Content-Encoding: gzip\r\n"))
    transport = WebhookTransport(server.url, None, 10.0, requests.Session())
    tracemalloc.start()
    try:
        error = send_in_thread(transport, limit_s=20)[1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        transport.close()
    assert error is None
    assert peak < 16 * MB, peak


def test_small_answers_keep_their_connection_alive(raw):
    def keep_alive(sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            read_request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = raw(keep_alive)
    transport = WebhookTransport(server.url, None, 5.0, requests.Session())
    try:
        for _ in range(5):
            error = send_in_thread(transport, limit_s=5)[1]
            assert error is None
    finally:
        transport.close()
    assert server.connections == 1


# --- MQTT against brokers that take the connection and then stall ------------------------------


def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """One MQTT packet: (its first byte, the rest); None at the end of the stream."""
    first = sock.recv(1)
    if not first:
        return None
    length, shift = 0, 0
    while True:
        b = sock.recv(1)
        if not b:
            return None
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return first[0], body


class Publishes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []  # (topic, dup)


def never_puback(publishes: Publishes) -> Callable[[socket.socket, threading.Event], None]:
    def handle(sock: socket.socket, stop: threading.Event) -> None:
        packet = read_packet(sock)  # CONNECT
        if packet is None:
            return
        sock.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
        while (packet := read_packet(sock)) is not None:
            kind, body = packet
            if kind >> 4 == 3:  # PUBLISH: remember it, never acknowledge it
                topic_len = int.from_bytes(body[:2], "big")
                publishes.seen.append((body[2:2 + topic_len].decode(), bool(kind & 0x08)))
    return handle


def silent(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set() and sock.recv(65536):
        pass


def dripping(sock: socket.socket, stop: threading.Event) -> None:
    sock.recv(65536)  # CONNECT; then a packet that never ends, a byte at a time
    drip(sock, stop, b"\x30\xff\xff\xff\x7f", byte=b"\x00")


def mqtt_transport(port: int, **extra: Any) -> Any:
    pytest.importorskip("paho.mqtt")
    from edge_runtime.forwarders.mqtt import MqttTransport

    settings = load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "mqtt", "host": "127.0.0.1", "port": port, "timeout_s": 0.5, "keepalive_s": 60,
         "backoff": {"initial_s": 1, "max_s": 1}, **extra}]})
    (cfg,) = settings.forwarders
    assert cfg.type == "mqtt"
    return MqttTransport.from_config(cfg, "kiosk-3")


def item(event_id: str = "e0") -> Any:
    box = MemoryOutbox()
    box.add_outbox("event-start", event_id, event(event_id))
    return box.outbox_after(0)[0]


@pytest.mark.parametrize("handler", [silent, dripping])
def test_a_broker_that_never_answers_connect_is_cut_and_tried_again(raw, handler):
    broker = raw(handler)
    transport = mqtt_transport(broker.port)
    try:
        errors = []
        began = time.monotonic()
        while broker.connections < 2 and time.monotonic() - began < 8:
            t0 = time.monotonic()
            with pytest.raises(DeliveryError) as caught:
                transport.send(item(), b"{}")
            assert time.monotonic() - t0 < 1.5
            errors.append(str(caught.value))
        assert broker.connections >= 2, errors  # a second try, long before the 60 s keepalive
        assert "the broker took the connection but sent no CONNACK within 0.5 s" in errors
    finally:
        transport.close()


def test_a_broker_that_never_pubacks_is_cut_and_gets_the_message_again(raw):
    publishes = Publishes()
    broker = raw(never_puback(publishes))
    transport = mqtt_transport(broker.port)
    message = item("e7")
    topic = "edge-runtime/kiosk-3/door/events"
    try:
        with pytest.raises(DeliveryError) as caught:
            transport.send(message, b"{}")
        assert wait_for(lambda: broker.connections >= 2, timeout=5)
        # paho sends the copy it holds again on the new connection, marked as a duplicate
        assert wait_for(lambda: [d for t, d in publishes.seen if t == topic] == [False, True], timeout=5), \
            publishes.seen
        assert str(caught.value) == "no PUBACK within 0.5 s; connecting again"
    finally:
        transport.close()


def test_a_stalled_broker_shows_as_a_failing_forwarder(raw, tmp_path):
    pytest.importorskip("paho.mqtt")
    broker = raw(silent)
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "a", event("a"))
    settings = load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "mqtt", "name": "up", "host": "127.0.0.1", "port": broker.port, "timeout_s": 0.5,
         "keepalive_s": 60, "poll_s": 0.05, "backoff": {"initial_s": 0.05, "max_s": 0.1}}]})
    running = forwarders.start_all(forwarding(settings), store)
    try:
        def stalled() -> bool:
            status = running.status()[0]
            return status["retried"] >= 2 and "sent no CONNACK within 0.5 s" in status["lastError"]

        assert wait_for(stalled, timeout=10), running.status()
        status = running.status()[0]
        assert status["failingForS"] > 0 and status["delivered"] == 0 and status["healthy"]
    finally:
        running.stop(timeout=5)
        store.close()


# --- secret and password files ---------------------------------------------------------------


def secret_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "secret"
    if kind == "/dev/zero":
        return Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b"k" * MB)
    elif kind == "empty":
        path.write_text("\n")
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00")
    if path.is_file():
        path.chmod(0o600)  # only the refusal under test, no warning about who may read it
    return path


REFUSED = [("/dev/zero", "not a regular file"), ("fifo", "not a regular file"),
           ("directory", "not a regular file"), ("huge", "larger than the 4096-byte limit"),
           ("empty", "is empty"), ("missing", "No such file or directory"), ("binary", "not UTF-8 text")]


@pytest.mark.timeout(10)  # a FIFO must be refused, not waited on
@pytest.mark.parametrize(("kind", "message"), REFUSED)
def test_secret_files_that_are_not_small_text_files_are_refused_in_one_line(tmp_path, kind, message):
    path = secret_file(tmp_path, kind)
    with pytest.raises(ConfigError) as caught:
        read_secret(path, "webhook secret_file")
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    for forwarder in ({"type": "webhook", "url": "http://127.0.0.1:9/", "secret_file": str(path)},
                      {"type": "mqtt", "host": "127.0.0.1", "username": "u", "password_file": str(path)}):
        with pytest.raises(ConfigError, match=message):  # what serve runs before it starts
            forwarders.check(forwarding(load_settings(overrides={"forwarders": [forwarder]})))


def test_a_symlinked_secret_works_and_a_world_readable_one_is_warned_about(tmp_path, caplog):
    real = tmp_path / "real-secret"
    real.write_text("s3cret-value\n")
    real.chmod(0o600)
    link = tmp_path / "mounted-secret"
    link.symlink_to(real)
    with caplog.at_level(logging.WARNING):
        assert read_secret(link, "webhook secret_file") == "s3cret-value"
    assert not caplog.records
    real.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_secret(link, "mqtt password_file") == "s3cret-value"
    (record,) = caplog.records
    assert "can be read by every user" in record.getMessage() and str(link) in record.getMessage()
    assert "s3cret-value" not in caplog.text


def test_bad_certificate_files_are_refused_before_any_delivery(tmp_path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for forwarder in ({"type": "webhook", "url": "https://127.0.0.1:9/", "ca_file": str(garbage)},
                      {"type": "mqtt", "host": "127.0.0.1", "tls": {"ca_file": str(garbage)}},
                      {"type": "mqtt", "host": "127.0.0.1", "tls": {"ca_file": str(tmp_path / "none.pem")}}):
        settings = load_settings(overrides={"forwarders": [forwarder]})
        with pytest.raises(ConfigError) as caught:
            forwarders.check(forwarding(settings))
        assert "\n" not in str(caught.value) and "forwarder " in str(caught.value)


def run_serve(tmp_path: Path, forwarder: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"events": {"store": {"path": str(tmp_path / "data")}},
                                      "forwarders": [forwarder]}))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("EDGE_RUNTIME_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config),
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("forwarder", "file", "message"), [
    ({"type": "webhook", "url": "http://127.0.0.1:9/"}, "missing", "secret_file {}: No such file or directory"),
    ({"type": "webhook", "url": "http://127.0.0.1:9/"}, "empty", "secret_file {} is empty"),
    ({"type": "mqtt", "host": "127.0.0.1", "username": "u"}, "empty", "password_file {} is empty"),
])
def test_serve_refuses_a_missing_or_empty_secret_in_one_line(tmp_path, forwarder, file, message):
    path = secret_file(tmp_path, file)
    key = "secret_file" if forwarder["type"] == "webhook" else "password_file"
    proc = run_serve(tmp_path, {**forwarder, key: str(path)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"edge-runtime: {forwarder['type']} {message.format(path)}"]
    assert "Traceback" not in proc.stdout + proc.stderr


# --- the outbox: kept until every configured forwarder has it, drops counted -----------------


def rules_only(tmp_path: Path) -> Settings:
    return load_settings(overrides={"events": {"store": {"path": str(tmp_path / "data")},
                                               "rules": [{"name": "all"}]}})


def with_forwarders(tmp_path: Path, *configs: dict[str, Any]) -> Settings:
    return load_settings(overrides={"events": {"store": {"path": str(tmp_path / "data")}},
                                    "forwarders": list(configs)})


def record_events(store: EventStore, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        now = time.time()
        started = store.start_event(EventRecord(id=new_id(now), rule="all", camera="door", tag="cola", start=now,
                                                end=None, last_at=now, peak=0.9, peak_at=now, frames=3))
        store.end_event(dataclasses.replace(started, end=now + 1))
        ids.append(started.id)
    return ids


def age_rows(data: Path, upto_seq: int, by_s: float) -> None:
    """Make outbox rows older, as if they had waited that long."""
    with contextlib.closing(sqlite3.connect(data / DB_NAME)) as db, db:
        db.execute("UPDATE outbox SET created = created - ? WHERE seq <= ?", (by_s, upto_seq))


def test_serve_without_forwarders_keeps_the_outbox_for_one_added_later(tmp_path):
    hook = Receiver(failures=0)
    store = EventStore.open(tmp_path / "data")
    try:
        ids = record_events(store, 3)
        janitor(rules_only(tmp_path), store).run()  # a serve with rules and no forwarder
        assert store.outbox_count(0) == 6
        running = forwarders.start_all(forwarding(with_forwarders(tmp_path, webhook_config(hook.url))), store)
        try:
            assert wait_for(lambda: len(hook.got) == 6, timeout=10), len(hook.got)
            assert wait_for(lambda: running.status()[0]["queueDepth"] == 0, timeout=5)
            status = running.status()[0]
        finally:
            running.stop(timeout=5)
    finally:
        hook.close()
        store.close()
    assert [json.loads(b)["id"] for _, b in hook.got] == [i for i in ids for _ in (0, 1)]
    assert status["dropped"] == 0 and status["delivered"] == 6


def test_without_forwarders_rows_are_kept_for_the_default_ttl(tmp_path):
    store = EventStore.open(tmp_path / "data")
    try:
        record_events(store, 2)
        sweeper = janitor(rules_only(tmp_path), store)
        sweeper.run(now=time.time() + DEFAULT_TTL_S - 60)
        assert store.outbox_count(0) == 4
        sweeper.run(now=time.time() + DEFAULT_TTL_S + 60)
        assert store.outbox_count(0) == 0
    finally:
        store.close()


def test_rows_stay_until_every_configured_forwarder_has_them(tmp_path):
    store = EventStore.open(tmp_path / "data")
    try:
        record_events(store, 3)
        store.set_cursor("a", 6)
        store.set_cursor("b", 2)
        a, b, c = ({"type": "webhook", "name": n, "url": "http://127.0.0.1:9/"} for n in "abc")
        janitor(with_forwarders(tmp_path, a, c), store).run()  # c has no cursor yet: it holds every row
        assert store.outbox_count(0) == 6
        janitor(with_forwarders(tmp_path, a, b), store).run()
        assert [i.seq for i in store.outbox_after(0)] == [3, 4, 5, 6]
        janitor(with_forwarders(tmp_path, a), store).run()  # b was removed: its old cursor holds nothing
        assert store.outbox_count(0) == 0
    finally:
        store.close()


def test_a_forwarder_added_later_starts_at_the_oldest_row_kept_and_counts_rows_that_exist(tmp_path):
    data = tmp_path / "data"
    store = EventStore.open(data)
    try:
        record_events(store, 3)
        age_rows(data, 3, 2 * DEFAULT_TTL_S)  # the oldest event's rows outlived the TTL
        late = {"type": "webhook", "name": "late", "url": "http://127.0.0.1:9/"}
        janitor(with_forwarders(tmp_path, late), store).run()  # configured, not yet started
        assert [i.seq for i in store.outbox_after(0)] == [4, 5, 6]
        link = Flaky(failures=1)
        f = Forwarder("late", "webhook", link, store, ttl_s=DEFAULT_TTL_S, backoff=Backoff(0.01, 0.01))
        assert f.queue()[0] == 3 and f.status()["queueDepth"] == 3
        assert store.cursor("late") == 3 == f.cursor
        while f.run_once() == 0.0 or f.delivered < 3:
            pass
        assert (f.delivered, f.dropped, f.queue()[0]) == (3, 0, 0)
    finally:
        store.close()


class Flaky:
    """A transport that fails its first `failures` sends, then records the ids it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def send(self, item: Any, body: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("link down")
        self.sent.append(json.loads(body)["id"])

    def close(self) -> None:
        pass


def test_every_row_removed_before_a_forwarder_reached_it_is_counted_once(tmp_path):
    data = tmp_path / "data"
    store = EventStore.open(data)
    metrics = Metrics()
    try:
        ids = record_events(store, 5)  # seqs 1-10, two per event
        store.set_cursor("up", 2)  # the first event was delivered
        age_rows(data, 6, 2 * DEFAULT_TTL_S)  # seqs 3-6 outlive the TTL while the link is down
        janitor(with_forwarders(tmp_path, {"type": "webhook", "name": "up", "url": "http://127.0.0.1:9/"}),
                store).run()
        store.delete(ids[3])  # seqs 7-8 go with their event
        link = Flaky(failures=3)
        f = Forwarder("up", "webhook", link, store, ttl_s=DEFAULT_TTL_S, backoff=Backoff(0.01, 0.01))
        running = forwarders.Running([f], metrics.registry)
        while f.run_once() != f.poll_s:
            pass
        text = metrics.render().decode()
        running.stop(0)
    finally:
        store.close()
    assert link.sent == [ids[4], ids[4]] and f.delivered == 2
    assert f.dropped == 6 and f.retried == 3
    assert 'edge_forwarder_dropped_total{forwarder="up"} 6.0' in text
    assert 'edge_forwarder_queue_depth{forwarder="up"} 0.0' in text


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edge_runtime import forwarders
    from edge_runtime.config import Settings, load_settings
    from edge_runtime.serve import forwarding, janitor
    from edge_runtime.events.store import EventStore
    settings = load_settings(Path(sys.argv[1]))
    store = EventStore.open(settings.events.store.path)
    running = forwarders.start_all(forwarding(settings), store)
    sweeper = janitor(settings, store)
    print("up", flush=True)
    while True:
        sweeper.run()
        time.sleep(0.02)
    """)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_around_a_serve_without_forwarders_loses_nothing(tmp_path):
    hook = Receiver(failures=0, delay_s=0.01)
    data = tmp_path / "data"
    store = EventStore.open(data)
    ids = [f"01JKILL{i:04d}" for i in range(200)]
    for i in ids:
        store.add_outbox("event-start", i, event(i))
    store.close()
    forwarder = {"events": {"store": {"path": str(data)}}, "forwarders": [webhook_config(hook.url)]}
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"events": {"store": {"path": str(data)}, "rules": [{"name": "all"}]}}))
    forwarding = tmp_path / "forwarding.yaml"
    forwarding.write_text(yaml.safe_dump(forwarder))

    def child(config: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(config)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        return proc

    def kill(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def received() -> set[str]:
        return {json.loads(body)["id"] for _, body in hook.got}

    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(child(forwarding))
        assert wait_for(lambda: len(hook.got) >= 60, timeout=30)
        kill(procs[-1])  # mid-backlog
        procs.append(child(plain))
        time.sleep(1.0)  # its janitor sweeps many times, with no forwarder configured
        kill(procs[-1])
        procs.append(child(forwarding))
        assert wait_for(lambda: received() == set(ids), timeout=40), len(received())
        kill(procs[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        hook.close()
    order = list(dict.fromkeys(json.loads(body)["id"] for _, body in hook.got))
    assert order == ids
