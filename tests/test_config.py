from __future__ import annotations

import argparse
import textwrap

import pytest

from edge_runtime.config import ModelConfig, check_access, flag_type, is_loopback, load_settings, resolve_token
from edge_runtime.errors import ConfigError
from edge_runtime.model.postprocess import MAX_DETECTIONS


def test_yaml_env_and_flags_are_layered(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  path: m.zip\n  top_k: 3\nserver:\n  port: 9000\n"
                    "cameras:\n  - id: door\n    source: rtsp://x/y\n    max_fps: 5\n")
    env = {"EDGE_RUNTIME_SERVER__PORT": "9100", "EDGE_RUNTIME_MODEL__THRESHOLD": "0.25"}
    settings = load_settings(path, env=env, overrides={"model": {"top_k": 7}})
    assert settings.model.path == "m.zip"
    assert settings.server.port == 9100
    assert settings.model.threshold == 0.25
    assert settings.model.top_k == 7
    assert settings.cameras[0].max_fps == 5 and settings.cameras[0].watchdog_s == 5.0


@pytest.mark.parametrize(("text", "key"), [
    ("sever:\n  port: 1\n", "sever"),
    ("server:\n  prot: 1\n", "server.prot"),
    ("cameras:\n  - id: a\n    sorce: x\n", "cameras.0.sorce"),
    ("server:\n  port: 70000\n", "server.port"),
    ("cameras:\n  - id: 'bad id'\n    source: x\n", "cameras.0.id"),
    ("cameras:\n  - {id: a, source: x}\n  - {id: a, source: y}\n", "unique"),
])
def test_typos_and_bad_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_settings(path, env={})


def test_unknown_env_key_fails_too():
    with pytest.raises(ConfigError, match="server.colour"):
        load_settings(env={"EDGE_RUNTIME_SERVER__COLOUR": "blue"})


def test_token_from_env_or_file(tmp_path):
    settings = load_settings(env={})
    assert resolve_token(settings, {}) is None
    assert resolve_token(settings, {"EDGE_RUNTIME_TOKEN": " s3cret-s3cret-s3cret\n"}) == "s3cret-s3cret-s3cret"
    file = tmp_path / "token"
    file.write_text("from-file-0123456789\n")
    assert resolve_token(settings, {"EDGE_RUNTIME_TOKEN_FILE": str(file)}) == "from-file-0123456789"
    with_file = load_settings(env={}, overrides={"server": {"token_file": str(file)}})
    assert resolve_token(with_file, {}) == "from-file-0123456789"
    file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_token(with_file, {})


@pytest.mark.parametrize(("value", "problem"), [
    ("", "is empty"), ("   \n\t", "is empty"), ("abc123", "too short"), ("0123456789abcdef" * 3 + "\x00", "control"),
    ("0123456789 abcdef", "spaces"),
])
def test_unusable_tokens_are_refused_in_one_line(tmp_path, value, problem):
    settings = load_settings(env={})
    with pytest.raises(ConfigError, match=problem) as env_error:
        resolve_token(settings, {"EDGE_RUNTIME_TOKEN": value})
    file = tmp_path / "token"
    file.write_text(value)
    with pytest.raises(ConfigError, match=problem) as file_error:
        resolve_token(settings, {"EDGE_RUNTIME_TOKEN_FILE": str(file)})
    for error in (env_error.value, file_error.value):
        assert "\n" not in str(error) and (not value.strip() or value.strip() not in str(error))


@pytest.mark.parametrize(("entry", "normal"), [
    ("Example.COM", "example.com"), ("example.com:8080", "example.com:8080"), ("10.0.0.8:80", "10.0.0.8:80"),
    ("[::1]:8443", "[::1]:8443"), ("[FE80::1]", "[fe80::1]"),
])
def test_url_allow_list_entries_are_host_and_port(entry, normal):
    settings = load_settings(env={}, overrides={"server": {"url": {"allow_hosts": [entry]}}})
    assert settings.server.url.allow_hosts == [normal]


@pytest.mark.parametrize("entry", ["http://example.com", "example.com/x", "user@example.com", "example.com:0",
                                   "example.com:99999", "example.com:http", "[::1", "a b", ""])
def test_url_allow_list_refuses_anything_but_host_and_port(entry):
    with pytest.raises(ConfigError, match="server.url.allow_hosts"):
        load_settings(env={}, overrides={"server": {"url": {"allow_hosts": [entry]}}})


def test_binding_beyond_loopback_needs_a_token():
    public = load_settings(env={}, overrides={"server": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="without a token"):
        check_access(public, None)
    check_access(public, "t")
    check_access(load_settings(env={}, overrides={"server": {"host": "0.0.0.0", "insecure": True}}), None)
    check_access(load_settings(env={}), None)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


@pytest.mark.parametrize("text", ["cameras:\n  - id: a\n    source: demo:\n",
                                  "cameras:\n  - {id: a, source: demo:}\n",
                                  "cameras:\n  - id: a\n    source:\n      demo:\n"])
def test_an_unquoted_colon_value_gets_a_hint_to_quote_it(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="quote") as caught:
        load_settings(path, env={})
    assert "\n" not in str(caught.value)


def test_the_documented_example_config_loads(tmp_path):
    import edge_runtime.config as config

    example = config.__doc__.split("\n\n    model:", 1)[1].split('\n"""')[0]
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent("    model:" + example.split("\n\n")[0]))
    settings = load_settings(path, env={})
    assert [c.source for c in settings.cameras] == ["rtsp://user:pass@10.0.0.8/stream", "demo:"]


def test_flags_share_the_settings_definitions():
    top_k, threshold = flag_type(ModelConfig, "top_k"), flag_type(ModelConfig, "threshold")
    assert top_k("3") == 3 and threshold("0.5") == 0.5
    for convert, bad in ((top_k, "0"), (top_k, "-1"), (top_k, "x"), (threshold, "2"), (threshold, "-0.1")):
        with pytest.raises(argparse.ArgumentTypeError):
            convert(bad)
    for key, value in (("top_k", 0), ("threshold", 2)):  # the same bounds in a config file
        with pytest.raises(ConfigError, match=f"model.{key}"):
            load_settings(env={}, overrides={"model": {key: value}})
    assert ModelConfig().max_detections == MAX_DETECTIONS


def test_the_pixel_limit_does_not_depend_on_import_order():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    show = ("import os, edge_runtime.model.limits as limits; "
            "print(limits.MAX_IMAGE_PIXELS, os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'))")
    outputs = {subprocess.run([sys.executable, "-c", f"{first}; {show}"], env=env, capture_output=True, text=True,
                              check=True, timeout=60).stdout
               for first in ("import cv2, edge_runtime", "import edge_runtime, cv2")}
    assert outputs == {f"{1 << 26} None\n"}  # our limit, checked by our code; OpenCV's left at its own default


def test_limits_are_settings_and_their_older_variables_are_aliases(tmp_path):
    from edge_runtime.model import limits

    assert load_settings(env={}).limits == limits.LimitsConfig()
    old = load_settings(env={"EDGE_RUNTIME_MAX_WORK_PIXELS": "1_000_000"})
    new = load_settings(env={"EDGE_RUNTIME_LIMITS__MAX_WORK_PIXELS": "1000000"})
    assert old.limits.max_work_pixels == new.limits.max_work_pixels == 1_000_000
    path = tmp_path / "edge-runtime.yaml"
    path.write_text("limits:\n  max_aspect_ratio: 40\n")
    assert load_settings(path, env={}).limits.max_aspect_ratio == 40
    path.write_text("limits:\n  max_aspect_ratio: 0\n")
    with pytest.raises(ConfigError, match=r"limits\.max_aspect_ratio"):
        load_settings(path, env={})
    path.write_text("limits:\n  max_aspect_ration: 40\n")
    with pytest.raises(ConfigError, match=r"max_aspect_ration"):
        load_settings(path, env={})


def test_serve_installs_the_settings_limits_for_its_process(tmp_path):
    from edge_runtime.model import limits
    from edge_runtime.serve import build_services

    path = tmp_path / "edge-runtime.yaml"
    path.write_text("limits:\n  decode_budget_mb: 7\n")
    try:
        build_services(load_settings(path, env={}), env={})
        assert limits.current().decode_budget_mb == 7
        assert limits.decode_budget().total == 7 * limits.MiB
    finally:
        limits.reset()
    assert limits.current().decode_budget_mb == limits.LimitsConfig().decode_budget_mb
