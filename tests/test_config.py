from __future__ import annotations

import pytest

from edge_runtime.config import check_access, is_loopback, load_settings, resolve_token
from edge_runtime.errors import ConfigError


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
