"""The MQTT forwarder against a real mosquitto on loopback, stopped and restarted under it.

The broker keeps the test subscriber's persistent session on disk (persistence true), so a
message published after the restart but before the subscriber is back is still counted;
messages are counted by event id, so duplicates (at least once) don't hide a loss.
The outage lasts 5 s by default; EDGE_RUNTIME_TEST_BROKER_OUTAGE_S=30 runs the 30 s case.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime import forwarders
from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.events.store import EventStore
from edge_runtime.forwarders.memory import MemoryOutbox
from edge_runtime.serve import forwarding
from tests.conftest import wait_for
from tests.receivers import SCHEMA, event

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (apt-get install mosquitto)")
USER, PASSWORD = "kiosk", "p4ss-word"
OUTAGE_S = float(os.environ.get("EDGE_RUNTIME_TEST_BROKER_OUTAGE_S", "5"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """mosquitto as a child process with its own config, password file and persistence folder."""

    def __init__(self, folder: Path, tls: Path | None = None) -> None:
        self.port = free_port()
        folder.mkdir(exist_ok=True)
        passwords = folder / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True,
                       capture_output=True)
        self.config = folder / "mosquitto.conf"
        secure = "" if tls is None else textwrap.dedent(f"""\
            cafile {tls}/ca.pem
            certfile {tls}/server.pem
            keyfile {tls}/server.key
            require_certificate true
            """)
        self.config.write_text(textwrap.dedent(f"""\
            user {getpass.getuser()}
            listener {self.port} 127.0.0.1
            allow_anonymous false
            password_file {passwords}
            persistence true
            persistence_location {folder}/
            log_dest file {folder}/mosquitto.log
            """) + secure)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_for(self._listening, timeout=10), "mosquitto did not start"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistent sessions, as a service stop does
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Subscriber:
    """Counts what arrives under edge-runtime/#, with a session that outlives broker restarts."""

    def __init__(self, port: int, client_id: str = "test-subscriber", clean: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any] | str, bool]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, *_: c.subscribe("edge-runtime/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        text = msg.payload.decode()
        body: dict[str, Any] | str = json.loads(text) if text.startswith("{") else text
        self.messages.append((msg.topic, body, bool(msg.retain)))

    def events(self) -> list[dict[str, Any]]:
        return [b for t, b, _ in self.messages if t.endswith("/events") and isinstance(b, dict)]

    def status(self) -> list[str]:
        return [str(b) for t, b, _ in self.messages if t.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_settings(tmp_path: Path, port: int, password: str = PASSWORD, **extra: Any):
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    return load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "mqtt", "name": "uplink", "host": "127.0.0.1", "port": port, "username": USER,
         "password_file": str(secret), "timeout_s": 2, "poll_s": 0.05, "keepalive_s": 5,
         "backoff": {"initial_s": 0.2, "max_s": 1.0}, **extra}]})


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_event_arrives_after_the_broker_was_down(tmp_path: Path, broker: Broker):
    sub = Subscriber(broker.port)
    store = EventStore.open(tmp_path / "data")
    before = [f"01JBEFORE{i}" for i in range(3)]
    during = [f"01JDURING{i}" for i in range(3)]
    for i in before:
        store.add_outbox("event-start", i, event(i, camera="door"))
    running = forwarders.start_all(forwarding(mqtt_settings(tmp_path, broker.port)), store)
    try:
        assert wait_for(lambda: len(sub.events()) >= 3, timeout=15)
        assert wait_for(lambda: "online" in sub.status(), timeout=5)
        broker.stop()
        for i in during:
            store.add_outbox("event-end", i, event(i, camera="till", end="2026-11-28T07:00:09.000Z"))
        assert wait_for(lambda: running.status()[0]["retried"] >= 2, timeout=OUTAGE_S + 10)
        time.sleep(max(0.0, OUTAGE_S - 2))
        down = running.status()[0]
        broker.start()
        assert wait_for(lambda: {e["id"] for e in sub.events()} >= {*before, *during}, timeout=30), sub.events()
        assert wait_for(lambda: running.status()[0]["queueDepth"] == 0, timeout=5)
        up = running.status()[0]
    finally:
        running.stop(timeout=5)
        sub.close()
        store.close()
    assert down["queueDepth"] == 3 and down["delivered"] == 3 and down["failingForS"] > 0
    assert up["delivered"] == 6 and up["dropped"] == 0 and up["healthy"] and up["failingForS"] == 0
    first_seen = list(dict.fromkeys(e["id"] for e in sub.events()))
    assert first_seen == [*before, *during]  # in order
    topics = {t for t, _, _ in sub.messages}
    assert {"edge-runtime/kiosk-3/door/events", "edge-runtime/kiosk-3/till/events",
            "edge-runtime/kiosk-3/status"} <= topics
    for body in sub.events():
        jsonschema.validate(body, SCHEMA)
    assert next(b["type"] for b in sub.events() if b["id"] == during[0]) == "event-end"


@pytest.mark.timeout(60)
def test_status_is_retained_online_then_offline_and_the_will_says_offline(tmp_path: Path, broker: Broker):
    store = EventStore.open(tmp_path / "data")
    running = forwarders.start_all(forwarding(mqtt_settings(tmp_path, broker.port)), store)
    late = None
    try:
        assert wait_for(lambda: running.forwarders[0].transport._connected.is_set(), timeout=10)  # type: ignore[attr-defined]
        late = Subscriber(broker.port, "late-1", clean=True)  # joins after: sees only the retained status
        assert wait_for(lambda: late.status() == ["online"], timeout=5)
        assert late.messages[0][2] is True
    finally:
        running.stop(timeout=5)
        if late:
            late.close()
        store.close()
    after = Subscriber(broker.port, "late-2", clean=True)
    assert wait_for(lambda: after.status() == ["offline"], timeout=5)  # a clean stop says so itself
    after.close()

    # killed without a goodbye: the broker publishes the last will
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from edge_runtime import forwarders
        from edge_runtime.serve import forwarding
        from edge_runtime.config import load_settings
        from edge_runtime.events.store import EventStore
        settings = load_settings(Path({str(tmp_path / 'child.yaml')!r}))
        running = forwarders.start_all(forwarding(settings), EventStore.open(Path({str(tmp_path / 'child')!r})))
        while not running.forwarders[0].transport._connected.is_set():
            time.sleep(0.05)
        print("connected", flush=True)
        time.sleep(60)
        """)
    settings = mqtt_settings(tmp_path, broker.port)
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"connected"
        watcher = Subscriber(broker.port, "watcher", clean=True)
        assert wait_for(lambda: watcher.status() == ["online"], timeout=5)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        assert wait_for(lambda: watcher.status() == ["online", "offline"], timeout=10)
        watcher.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.timeout(30)
def test_a_wrong_password_shows_as_the_last_error(tmp_path: Path, broker: Broker):
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "e0", event("e0"))
    running = forwarders.start_all(forwarding(mqtt_settings(tmp_path, broker.port, password="wrong")), store)
    try:
        assert wait_for(lambda: "refused" in running.status()[0]["lastError"], timeout=15)
        status = running.status()[0]
    finally:
        running.stop(timeout=5)
        store.close()
    assert status["delivered"] == 0 and status["queueDepth"] == 1
    assert "Not authorized" in status["lastError"]


def make_certificates(folder: Path) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, by openssl."""
    folder.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for who, subject, ext in (("server", "/CN=127.0.0.1", ["-extfile", "san.ext"]), ("client", "/CN=kiosk", [])):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{who}.pem", "-days", "1", *ext)
    return folder


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_events_go_over_mutual_tls(tmp_path: Path):
    certs = make_certificates(tmp_path / "certs")
    broker = Broker(tmp_path / "tls-broker", tls=certs)
    broker.start()
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "01JTLS", event("01JTLS"))
    tls = {"ca_file": str(certs / "ca.pem"), "cert_file": str(certs / "client.pem"),
           "key_file": str(certs / "client.key")}
    running = forwarders.start_all(forwarding(mqtt_settings(tmp_path, broker.port, tls=tls)), store)
    try:
        assert wait_for(lambda: running.status()[0]["delivered"] == 1, timeout=15), running.status()
    finally:
        running.stop(timeout=5)
        store.close()
        broker.stop()
    log = (tmp_path / "tls-broker" / "mosquitto.log").read_text()
    assert "New client connected" in log and " as edge-runtime-kiosk-3-uplink " in log


def test_a_device_name_that_cannot_be_a_topic_level_is_one_line(tmp_path: Path):
    settings = mqtt_settings(tmp_path, 1883).model_copy(update={"events": load_settings(
        overrides={"events": {"device": "kiosk/+"}}).events})
    with pytest.raises(ConfigError, match=r"events.device 'kiosk/\+' cannot name an MQTT topic level"):
        forwarders.start_all(forwarding(settings), MemoryOutbox())
