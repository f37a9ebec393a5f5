"""`edge-runtime serve` as a process: the demo with no arguments, refusals, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import wait_for, write_video
from tests.server_util import free_port


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGE_RUNTIME_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
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
        connected, ended = threading.Event(), threading.Event()
        threading.Thread(target=hold_stream, args=(f"{url}/events", connected, ended), daemon=True).start()
        assert connected.wait(10)
        began = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - began
        assert ended.wait(5)  # the server closed the stream
        # uvicorn finishes its shutdown, then re-raises the signal so the exit status tells it
        assert proc.returncode in (0, -sig, 130), out
        assert "Application shutdown complete" in out
        assert "each result lists the 5 most likely of its 1000 tags" in out  # the log says why only 5
        assert elapsed < 5.0
    finally:
        proc.kill()


def hold_stream(url: str, connected: threading.Event, ended: threading.Event) -> None:
    """Reads an event stream until the server ends it; `connected` is set at its first line."""
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=30)) as r:
            for _ in r.iter_lines():
                connected.set()
    except httpx.HTTPError:
        pass
    ended.set()


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


@pytest.mark.slow
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


def settings_for(*argv: str):  # type: ignore[no-untyped-def]
    from edge_runtime.cli import build_parser, demo_overrides, serve_overrides
    from edge_runtime.config import load_settings, merge

    args = build_parser().parse_args(["serve", *argv])
    overrides = serve_overrides(args)
    settings = load_settings(env={}, overrides=overrides)
    return load_settings(env={}, overrides=merge(overrides, demo_overrides(settings)))


def test_the_demo_keeps_every_flag_it_is_given():
    settings = settings_for("--threshold", "0.4", "--provider", "cpu", "--threads", "1", "--max-detections", "7")
    assert [c.source for c in settings.cameras] == ["demo:"]
    model = settings.model
    assert (model.threshold, model.providers, model.threads, model.max_detections) == (0.4, ["cpu"], 1, 7)
    assert model.top_k == 5  # the demo's own cut of its 1000 tags, unless --top-k says otherwise
    assert settings_for("--top-k", "2").model.top_k == 2
    assert settings_for("--source", "demo:").model.top_k is None  # not the demo: every tag


def test_a_bad_provider_for_the_demo_fails_at_start_in_one_line(tmp_path):
    proc = run_serve("--provider", "nonsense", "--port", str(free_port()), env={"XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("edge-runtime: execution provider 'nonsense' is not available")


@pytest.mark.parametrize(("source", "message"), [
    ("door.mp4", "camera cam0: door.mp4: no such file"),
    ("rtsp://u:secret@host:abc/x", "not a valid URL"),
    ("rtsp://[::1/x", "Invalid IPv6 URL"),
])
def test_sources_that_cannot_work_fail_at_start_in_one_line(tmp_path, source, message):
    proc = run_serve("--source", source, "--port", str(free_port()))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr
    assert "secret" not in proc.stderr


def test_insecure_serving_is_logged_as_a_warning(exports, caplog):
    from edge_runtime.config import load_settings
    from edge_runtime.model.predictor import Predictor
    from edge_runtime.serve import build_services

    predictor = Predictor.load(exports["modern"])
    settings = load_settings(env={}, overrides={"server": {"host": "0.0.0.0", "insecure": True}})
    with caplog.at_level("WARNING", logger="edge_runtime.serve"):
        build_services(settings, predictor=predictor, env={})
    assert any("without a token (--insecure)" in r.message and r.levelname == "WARNING" for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="edge_runtime.serve"):
        build_services(load_settings(env={}), predictor=predictor, env={})
    assert not caplog.records


def test_more_runs_than_cores_is_logged_as_a_warning(monkeypatch, tmp_path, caplog):
    from edge_runtime.assembly import load_predictor
    from edge_runtime.config import load_settings
    from edge_runtime.serve import build_services

    video = write_video(tmp_path / "door.avi", frames=4)

    monkeypatch.setattr("edge_runtime.serve.os.cpu_count", lambda: 2)
    for runs, warned in ((2, False), (8, True)):
        settings = load_settings(env={}, overrides={
            "workers": 0, "model": {"runs": runs}, "cameras": [{"id": "door", "source": str(video)}]})
        caplog.clear()
        with caplog.at_level("WARNING", logger="edge_runtime.serve"):
            build_services(settings, predictor=load_predictor(settings, runs=runs, threads=1), env={})
        assert any("model.runs 8 is more than the 2 cores" in r.message for r in caplog.records) == warned


@pytest.mark.parametrize(("cameras", "model", "expected"), [
    (1, {}, (2, 3)), (0, {}, (1, 0)), (2, {"threads": 2}, (3, 2)), (1, {"runs": 1}, (1, 4))])
def test_cameras_split_the_cores_into_runs(monkeypatch, cameras, model, expected):
    from edge_runtime.assembly import load_predictor
    from edge_runtime.config import load_settings
    from edge_runtime.serve import cores_plan

    monkeypatch.setattr("edge_runtime.serve.os.cpu_count", lambda: 4)
    settings = load_settings(env={}, overrides={
        "workers": 0, "model": model, "cameras": [{"id": f"c{i}", "source": "0"} for i in range(cameras)]})
    split = cores_plan(settings).server
    assert (split.runs, split.threads) == expected
    predictor = load_predictor(settings, runs=split.runs, threads=split.threads)
    assert predictor.model.runs == split.runs  # the session admits that many frames at once
    assert predictor.model.session.get_session_options().intra_op_num_threads == split.threads


@pytest.mark.slow
def test_an_absent_camera_is_retried_quietly_and_counted(exports):
    port = free_port()
    proc = start(str(exports["modern"]), "--source", "0", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        def reconnects() -> int:
            try:
                return int(httpx.get(f"{url}/cameras", timeout=2).json()[0]["reconnects"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                return -1

        assert wait_for(lambda: reconnects() >= 2, timeout=30)
        assert httpx.get(f"{url}/cameras", timeout=2).json()[0]["state"] in ("reconnecting", "offline")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert "[ WARN" not in out and "[ERROR" not in out  # OpenCV's own lines stay out unless -v
    warnings = [line for line in out.splitlines() if "camera cam0: cannot open" in line]
    assert 1 <= len(warnings) <= 2 and all(" WARNING " in line for line in warnings)
