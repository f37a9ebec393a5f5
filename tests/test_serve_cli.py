"""`edge-runtime serve` as a process: the demo with no arguments, refusals, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.server_util import free_port


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGE_RUNTIME_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_no_arguments_serves_the_demo_and_stops_cleanly(sig, tmp_path):
    port = free_port()
    proc = start("--port", str(port), env={"XDG_CACHE_HOME": str(tmp_path)})
    try:
        url = f"http://127.0.0.1:{port}"

        def latest() -> dict | None:  # type: ignore[type-arg]
            try:
                r = httpx.get(f"{url}/predictions/latest", timeout=2)
            except httpx.HTTPError:
                return None
            return r.json() if r.status_code == 200 else None

        assert wait_for(lambda: latest() is not None, timeout=60), proc.stdout
        first = latest()
        assert first is not None and first["camera"] == "demo" and len(first["predictions"]) == 5
        assert wait_for(lambda: (latest() or {}).get("seq", 0) > first["seq"], timeout=10)
        # keep an event stream open: shutdown must not wait for it
        stream = subprocess.Popen(["curl", "-sN", f"{url}/events"], stdout=subprocess.DEVNULL) \
            if _has_curl() else None
        time.sleep(0.5)
        began = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - began
        if stream:
            stream.kill()
        # uvicorn finishes its shutdown, then re-raises the signal so the exit status tells it
        assert proc.returncode in (0, -sig, 130), out
        assert "Application shutdown complete" in out
        assert elapsed < 5.0
    finally:
        proc.kill()


def _has_curl() -> bool:
    import shutil

    return shutil.which("curl") is not None


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGE_RUNTIME_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_refuses_the_network_without_a_token():
    proc = run_serve("--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0 without a token" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_config_typo_names_the_key(tmp_path):
    config = tmp_path / "edge.yaml"
    config.write_text("server:\n  prot: 8080\n")
    proc = run_serve("--config", str(config))
    assert proc.returncode == 1
    assert "server.prot" in proc.stderr and "Traceback" not in proc.stderr


def test_token_file_secret_stays_out_of_the_log(tmp_path):
    token = tmp_path / "token"
    token.write_text("very-secret-value\n")
    port = free_port()
    proc = start("--host", "0.0.0.0", "--port", str(port), "--token-file", str(token), "--source", "demo:",
                 env={"XDG_CACHE_HOME": str(tmp_path)})
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _status(f"{url}/healthz") == 200, timeout=60)
        assert _status(f"{url}/model") == 401
        assert _status(f"{url}/model", "very-secret-value") == 200
        assert _status(f"{url}/model?token=very-secret-value") == 401  # the query is read only by /
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert "very-secret-value" not in out
    assert "/model" in out  # requests are logged, without their query strings


def _status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code
    except httpx.HTTPError:
        return 0
