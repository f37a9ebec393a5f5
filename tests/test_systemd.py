"""systemd integration: the unit file verifies, and the server speaks the notify protocol."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.service import systemd
from tests.server_util import free_port

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "edge-runtime.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies_cleanly(tmp_path):
    entry = shutil.which("edge-runtime") or str(Path(sys.executable).parent / "edge-runtime")
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-runtime/venv/bin/edge-runtime", entry))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    text = UNIT.read_text()
    for line in ("Restart=always", "SupplementaryGroups=video", "EnvironmentFile=", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/edge-runtime", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "WatchdogSec=", "Type=notify", "DynamicUser=yes"):
        assert line in text


def test_notify_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd.watchdog_interval() is None  # meant for another process


def test_serve_reports_ready_pings_the_watchdog_and_says_stopping(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000", "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("EDGE_RUNTIME_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--port", str(free_port())],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        messages = []
        deadline = time.monotonic() + 60
        while messages.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
            messages.append(sock.recv(256).decode())
        assert messages[0] == "READY=1"
        assert messages.count("WATCHDOG=1") >= 2
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages and time.monotonic() < deadline:
            messages.append(sock.recv(256).decode())
        assert "STOPPING=1" in messages
    finally:
        proc.kill()
        sock.close()
