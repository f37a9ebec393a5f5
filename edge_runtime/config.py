"""Settings: one YAML file, then environment variables, then command-line flags.

Every model forbids unknown keys, so a typo fails loudly with the key named. Environment
variables address any key as EDGE_RUNTIME_<SECTION>__<KEY> (values are read as YAML
scalars), e.g. EDGE_RUNTIME_SERVER__PORT=9000. The bearer token is never a setting: it
comes from EDGE_RUNTIME_TOKEN or from a file (EDGE_RUNTIME_TOKEN_FILE, server.token_file,
--token-file), so it stays out of shell history, config files and logs.

    model:
      path: exports/shelf.zip
      providers: [cuda, cpu]
      top_k: 5
    workers: auto          # camera worker processes (0: all in the server process)
    cameras:
      - id: shelf
        source: rtsp://user:pass@10.0.0.8/stream
        max_fps: 10
      - id: demo
        source: "demo:"      # quoted: a bare `demo:` is a YAML mapping, not a string
    server:
      host: 0.0.0.0
      port: 8080
      token_file: /etc/edge-runtime/token
    log:
      jsonl: /var/lib/edge-runtime/results.jsonl
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from .capture.sources.uri import check_uri
from .errors import ConfigError, EdgeRuntimeError
from .events.config import EventsConfig
from .events.samplers import SamplesConfig
from .forwarders.config import ForwarderConfig, unique_names
from .model.limits import LimitsConfig
from .model.limits import from_env as limits_from_env
from .model.postprocess import CLASSIFICATION_THRESHOLD, DETECTION_THRESHOLD, MAX_DETECTIONS, PostprocessOptions
from .paths import CONFIG_FILE_BYTES, SECRET_FILE_BYTES, read_setting_file
from .publish.config import ModelsConfig
from .settings_base import ENV_PREFIX, Strict, require_unique

TOKEN_ENV = "EDGE_RUNTIME_TOKEN"
TOKEN_FILE_ENV = "EDGE_RUNTIME_TOKEN_FILE"
DEMO = "demo"
DEMO_TOP_K = 5  # the demo model has 1000 tags: without --top-k, its results show this many
MIN_TOKEN_LENGTH = 16


class ModelConfig(Strict):
    """The model and what each prediction reports. These fields are also the command line's
    definitions of --threshold, --top-k, --max-detections and --threads (see `flag_type`)."""

    path: str = Field(DEMO, description="export zip, folder or .onnx; 'demo' for the built-in model")
    providers: list[str] = Field(default_factory=list, description="execution providers in order; empty: fastest")
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads, which the runs share; 0: "
                         "the cores the runs leave (all of them without cameras)")
    runs: int = Field(0, ge=0, le=64, description="frames inferred at once on the CPU, each holding its own "
                      "activations in memory; 0: two per camera, at most one per core (one without cameras)")
    spinning: bool = Field(False, description="idle onnxruntime threads busy-wait (faster bare runs, "
                           "slower when capture shares the cores)")
    graph_cache: bool = Field(True, description="keep onnxruntime's optimised graph between starts (CPU provider; "
                              "folder: EDGE_RUNTIME_CACHE_DIR or the user's cache)")
    threshold: float | None = Field(None, ge=0, le=1, description="lowest probability reported (default: "
                                    f"{CLASSIFICATION_THRESHOLD:g} for classification, {DETECTION_THRESHOLD:g} "
                                    "for detection)")
    top_k: int | None = Field(None, ge=1, le=100_000, description="at most this many predictions per image "
                              "(default: every tag; detection: max_detections)")
    max_detections: int = Field(MAX_DETECTIONS, ge=1, le=1000, description="detection only: at most this many boxes")

    def postprocess_options(self) -> PostprocessOptions:
        return PostprocessOptions(threshold=self.threshold, top_k=self.top_k, max_detections=self.max_detections)


class GateConfig(Strict):
    enabled: bool = Field(False, description="run the model only when the scene changes (or every max_idle_s)")
    min_changed: float = Field(0.002, gt=0, le=1, description="share of a small grey thumbnail's pixels that "
                               "must change for the model to run")
    max_idle_s: float = Field(10.0, gt=0, le=86400, description="run the model at least this often anyway")


class CameraConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="name used in URLs and metrics")
    source: str = Field(min_length=1, description="device, rtsp://, http(s)://, file, folder, gst:, picam:, demo:")
    loop: bool = Field(False, description="files and folders: start again at the end")
    realtime: bool = Field(False, description="files: play at their own frame rate, dropping frames if behind "
                           "(the file still ends unless `loop`)")
    max_fps: float | None = Field(None, gt=0, le=1000, description="run the model at most this often")
    watchdog_s: float = Field(5.0, gt=0, le=3600, description="reopen the source after this long without a frame")
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    gate: GateConfig = GateConfig()
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="the published "
                              "name this camera runs (`edge-runtime models`); default: the served model")

    @field_validator("source", mode="before")
    @classmethod
    def _source_is_text(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
            # YAML read `source: demo:` as {"demo": None}
            raise ValueError(f'must be a string: write it in quotes, source: "{next(iter(value))}:"')
        return value

    @field_validator("source")
    @classmethod
    def _source_parses(cls, value: str) -> str:
        try:
            check_uri(value)
        except EdgeRuntimeError as exc:
            raise ValueError(str(exc)) from None
        return value


class UrlConfig(Strict):
    enabled: bool = Field(False, description="POST /url fetches images from the network (an SSRF risk)")
    allow_hosts: list[str] = Field(default_factory=list, description="host or host:port entries that may be "
                                   "fetched over http or https; a bare host means port 80 or 443")
    timeout_s: float = Field(5.0, gt=0, le=60, description="overall deadline for one fetch: connect, headers "
                             "and body together")
    max_concurrent: int = Field(2, ge=1, le=16, description="fetches at once, in their own threads; more get 503")

    @field_validator("allow_hosts")
    @classmethod
    def _host_and_port(cls, entries: list[str]) -> list[str]:
        return [normalize_host_entry(e) for e in entries]


def split_host_port(text: str) -> tuple[str, int | None]:
    """'Example.com:8080' -> ('example.com', 8080); '[::1]' -> ('::1', None). ValueError if malformed."""
    host, port = text.strip().lower(), None
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not host or host:port")
        host, rest = inner, rest[1:]
        if rest:
            port = int(rest) if rest.isdigit() else -1
    elif host.count(":") == 1:
        host, rest = host.split(":")
        port = int(rest) if rest.isdigit() else -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{text!r} has a bad port")
    host = host.rstrip(".")
    if not host or not all(c.isalnum() or c in "-._:" for c in host) or (":" in host and not _is_ip(host)):
        raise ValueError(f"{text!r} is not host or host:port")
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalize_host_entry(entry: str) -> str:
    if "/" in entry or "@" in entry:
        raise ValueError(f"{entry!r}: give host or host:port, without a scheme or path")
    host, port = split_host_port(entry)
    name = f"[{host}]" if ":" in host else host
    return name if port is None else f"{name}:{port}"


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs a token")
    port: int = Field(8080, ge=0, le=65535)
    token_file: Path | None = Field(None, description="file holding the bearer token")
    insecure: bool = Field(False, description="allow binding beyond loopback without a token")
    max_upload_bytes: int = Field(4 * 1024 * 1024, gt=0, le=256 * 1024 * 1024)
    max_image_pixels: int = Field(1 << 26, gt=0)
    project: str = Field("", description="reported as 'project' in prediction JSON")
    mjpeg_max_fps: float = Field(15.0, gt=0, le=120, description="ceiling for /stream.mjpg")
    url: UrlConfig = UrlConfig()
    allowed_hosts: list[str] = Field(default_factory=list, description="Host header names the server answers "
                                     "to ('*': any); empty: loopback names on loopback, any name otherwise")
    session_ttl_s: int = Field(24 * 3600, ge=60, le=90 * 24 * 3600, description="how long the live page's "
                               "sign-in lasts")
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="a client must send a request's headers "
                                    "within this long, or the connection is closed")
    body_timeout_s: float = Field(60.0, gt=0, le=3600, description="... and its whole body within this long "
                                  "after the headers")
    max_connections: int = Field(256, ge=8, le=65536, description="open connections at most; at the cap the "
                                 "oldest one without a request in progress is closed (lowered to fit the "
                                 "open-file limit)")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, entries: list[str]) -> list[str]:
        return [e if e == "*" else split_host_port(e)[0] for e in entries]


class LogConfig(Strict):
    jsonl: Path | None = Field(None, description="append every result to this JSON-lines file")
    jsonl_max_mb: int = Field(256, ge=1, le=1 << 20, description="the JSON-lines files together stay under this")
    jsonl_files: int = Field(4, ge=1, le=100, description="rotate through this many JSON-lines files")
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(Strict):
    model: ModelConfig = ModelConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = Field(
        "auto", description="camera worker processes; 0: cameras run in the server process; auto: one per "
        "camera, up to one per core, with two cameras or more on three cores or more (workers/plan.py)")
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    events: EventsConfig = EventsConfig()
    forwarders: list[ForwarderConfig] = Field(default_factory=list, description="send events upstream")
    samples: SamplesConfig = SamplesConfig()
    models: ModelsConfig = ModelsConfig()
    limits: LimitsConfig = Field(LimitsConfig(), description="what one input may cost (docs/limits.md); each "
                                 "also reads EDGE_RUNTIME_<KEY IN CAPITALS>, e.g. EDGE_RUNTIME_MAX_WORK_PIXELS")

    @field_validator("forwarders")
    @classmethod
    def _unique_forwarders(cls, forwarders: list[ForwarderConfig]) -> list[ForwarderConfig]:
        return unique_names(forwarders)

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        require_unique((c.id for c in cameras), "camera ids")
        return cameras


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    aliases = limits_from_env(env)  # EDGE_RUNTIME_MAX_WORK_PIXELS for limits.max_work_pixels
    tree: dict[str, Any] = {"limits": aliases} if aliases else {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name in (TOKEN_ENV, TOKEN_FILE_ENV):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            node[path[-1]] = raw
    return tree


def _describe(exc: ValidationError, origin: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return f"{origin}: " + "; ".join(problems)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults < YAML file < EDGE_RUNTIME_* variables < flags; ConfigError names any bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        raw = read_setting_file(path, "config file", CONFIG_FILE_BYTES)
        try:
            loaded = yaml.safe_load(raw.decode("utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)} (a value with a colon, such as "
                              '"demo:", needs quotes)') from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded
    data = merge(data, _from_env(os.environ if env is None else env))
    data = merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path) if path else "settings")) from None


def flag_type(model: type[BaseModel], name: str) -> Callable[[str], Any]:
    """An argparse `type` that checks a flag against the settings field of the same name, so
    a flag and its config key share one definition: the same bounds, the same message.

        parser.add_argument("--top-k", type=flag_type(ModelConfig, "top_k"))
    """
    info = model.model_fields[name]
    parts = (info.annotation, *info.metadata)
    kind: Any = Annotated[parts] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def convert(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError("; ".join(e["msg"] for e in exc.errors())) from None

    convert.__name__ = name.replace("_", "-")  # argparse names the type in some messages
    return convert


def field_help(model: type[BaseModel], name: str) -> str:
    """The settings field's description, for a flag's help text."""
    return model.model_fields[name].description or ""


def resolve_token(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from EDGE_RUNTIME_TOKEN or a file, or None when neither is set.
    A set but empty, short or blank-containing token is refused: it would open every route."""
    env = os.environ if env is None else env
    if TOKEN_ENV in env:
        return check_token(env[TOKEN_ENV], TOKEN_ENV)
    file = env.get(TOKEN_FILE_ENV) or settings.server.token_file
    if not file:
        return None
    raw = read_setting_file(file, "token file", SECRET_FILE_BYTES, secret=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"token file {file}: not UTF-8 text") from None
    return check_token(text, f"token file {file}")


def check_token(raw: str, origin: str) -> str:
    token = raw.strip()
    if not token:
        raise ConfigError(f"{origin} is empty")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{origin} is too short: use at least {MIN_TOKEN_LENGTH} characters "
                          "(e.g. python3 -c 'import secrets; print(secrets.token_hex(24))')")
    if any(not c.isprintable() or c.isspace() for c in token):
        raise ConfigError(f"{origin} holds spaces or control characters")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_access(settings: Settings, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token, unless told --insecure."""
    host = settings.server.host
    if token is None and not is_loopback(host) and not settings.server.insecure:
        raise ConfigError(
            f"refusing to serve on {host} without a token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}, "
            "or use --token-file (or --insecure to serve the network unauthenticated)"
        )
