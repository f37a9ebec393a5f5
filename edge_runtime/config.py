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
    server:
      host: 0.0.0.0
      port: 8080
      token_file: /etc/edge-runtime/token
    log:
      jsonl: /var/lib/edge-runtime/results.jsonl
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

ENV_PREFIX = "EDGE_RUNTIME_"
TOKEN_ENV = "EDGE_RUNTIME_TOKEN"
TOKEN_FILE_ENV = "EDGE_RUNTIME_TOKEN_FILE"
DEMO = "demo"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    path: str = Field(DEMO, description="export zip, folder or .onnx; 'demo' for the built-in model")
    providers: list[str] = Field(default_factory=list, description="execution providers in order; empty: fastest")
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0: all cores, or all "
                         "but one when cameras run")
    spinning: bool = Field(False, description="idle onnxruntime threads busy-wait (faster bare runs, "
                           "slower when capture shares the cores)")
    threshold: float | None = Field(None, ge=0, le=1, description="lowest probability reported")
    top_k: int | None = Field(None, ge=1, description="at most this many predictions per image")
    max_detections: int = Field(20, ge=1, le=1000, description="detection only")


class CameraConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="name used in URLs and metrics")
    source: str = Field(min_length=1, description="device, rtsp://, http(s)://, file, folder, gst:, picam:, demo:")
    loop: bool = Field(False, description="files and folders: start again at the end")
    realtime: bool = Field(False, description="files: play at their own frame rate, dropping frames if behind")
    max_fps: float | None = Field(None, gt=0, le=1000, description="run the model at most this often")
    watchdog_s: float = Field(5.0, gt=0, le=3600, description="reopen the source after this long without a frame")
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)


class UrlConfig(Strict):
    enabled: bool = Field(False, description="POST /url fetches images from the network (an SSRF risk)")
    allow_hosts: list[str] = Field(default_factory=list, description="only these host names may be fetched")
    timeout_s: float = Field(5.0, gt=0, le=60)


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

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique: {', '.join(duplicates)}")
        return cameras


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
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
        problems.append(f"{where}: {err['msg']}")
    return f"{origin}: " + "; ".join(problems)


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults < YAML file < EDGE_RUNTIME_* variables < flags; ConfigError names any bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded
    data = _merge(data, _from_env(os.environ if env is None else env))
    data = _merge(data, overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path) if path else "settings")) from None


def resolve_token(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    file = env.get(TOKEN_FILE_ENV) or settings.server.token_file
    if not file:
        return None
    try:
        token = Path(file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {file}: {exc.strerror or exc}") from exc
    if not token:
        raise ConfigError(f"token file {file} is empty")
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
